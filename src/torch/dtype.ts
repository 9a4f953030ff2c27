// Tensor element types. The codes are c10::ScalarType's values, which cross the native boundary as is.

export type DType =
  "uint8" | "int8" | "int16" | "int32" | "int64" | "float16" | "float32" | "float64" | "bool" | "bfloat16";

export const DTYPE_CODE: Record<DType, number> = {
  uint8: 0,
  int8: 1,
  int16: 2,
  int32: 3,
  int64: 4,
  float16: 5,
  float32: 6,
  float64: 7,
  bool: 11,
  bfloat16: 15,
};

const CODE_TO_DTYPE = new Map<number, DType>(Object.entries(DTYPE_CODE).map(([name, code]) => [code, name as DType]));

export function dtypeFromCode(code: number): DType {
  const dtype = CODE_TO_DTYPE.get(code);
  if (!dtype) throw new Error(`unsupported tensor dtype code ${code}`);
  return dtype;
}

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  uint8: 1,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  float16: 2,
  float32: 4,
  float64: 8,
  bool: 1,
  bfloat16: 2,
};

/** torch.finfo(dtype).min: the fill value HF uses for masked attention scores (never -inf). */
export const FLOAT_MIN: Partial<Record<DType, number>> = {
  float16: -65504,
  bfloat16: -3.3895313892515355e38,
  float32: -3.4028234663852886e38,
  float64: -1.7976931348623157e308,
};

export function isFloating(dtype: DType): boolean {
  return dtype === "float16" || dtype === "bfloat16" || dtype === "float32" || dtype === "float64";
}

/** The dtype names users write in configs (OA's `dtype: fp16`, HF's `torch_dtype: "float16"`). */
export function parseDType(name: string): DType {
  const aliases: Record<string, DType> = {
    fp32: "float32",
    float32: "float32",
    float: "float32",
    fp16: "float16",
    float16: "float16",
    half: "float16",
    bf16: "bfloat16",
    bfloat16: "bfloat16",
    fp64: "float64",
    float64: "float64",
    double: "float64",
  };
  const dtype = aliases[name.toLowerCase()];
  if (!dtype)
    throw new Error(`unknown dtype '${name}': expected one of fp32, fp16, bf16 (or float32, float16, bfloat16)`);
  return dtype;
}

/** Typed-array views for the dtypes JS can hold natively; 16-bit floats travel as raw Uint16 bits. */
export type TypedArrayFor<D extends DType> = D extends "float32"
  ? Float32Array
  : D extends "float64"
    ? Float64Array
    : D extends "int64"
      ? BigInt64Array
      : D extends "int32"
        ? Int32Array
        : D extends "int16"
          ? Int16Array
          : D extends "int8"
            ? Int8Array
            : D extends "float16" | "bfloat16"
              ? Uint16Array
              : Uint8Array;
