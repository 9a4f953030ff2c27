// oasft's tensor API over libtorch. `import * as torch from "../torch/index.js"`.
export * from "./ops.js";
export { Tensor, DisposedError, type CreateOptions } from "./tensor.js";
import "./tensor-math.js"; // the elementwise and reduction methods, attached to Tensor
export { scope, noGrad, isGradEnabled, autocast, autocastDtype, setAutocastCacheEnabled, disposeAll } from "./scope.js";
export { type DType, DTYPE_CODE, BYTES_PER_ELEMENT, FLOAT_MIN, isFloating, parseDType } from "./dtype.js";
export {
  loadSafetensors,
  loadSafetensorsEntry,
  readSafetensorsHeader,
  saveSafetensors,
  type SafetensorsEntry,
  type SafetensorsHeader,
} from "./safetensors.js";
export { features, loadedBlas, native, type Handle } from "./binding.js";
export { Tape, type Recorded } from "./tape.js";
export { resolveDevice, deviceType, parseComputeDType, DeviceError } from "./device.js";
export { defaultThreads, foreignRunnable, usableCpus } from "./threads.js";
