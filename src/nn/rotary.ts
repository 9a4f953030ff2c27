// Rotary position embeddings (RoFormer), as Hugging Face's GPT-NeoX and LLaMA code computes them: the
// half-split convention (dims j and j + rot/2 rotate together, "rotate_half"), optionally on the first
// `rot` dims of each head only (GPT-NeoX's rotary_pct), with linear or dynamic NTK scaling.
//
// Shapes: b batch, s tokens, n heads, d head dim, r rotary dims (r ≤ d, even).
import * as torch from "../torch/index.js";

export type RopeScaling =
  | { type: "linear" | "dynamic"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

/** cos and sin tables [b, 1, s, r] (float32) for one forward's new positions. */
export interface RotaryTables {
  cos: torch.Tensor;
  sin: torch.Tensor;
}

export class RotaryEmbedding {
  /**
   * @param dims  r, the rotated dims of each head
   * @param base  the frequency base (rope_theta / rotary_emb_base)
   * @param maxPositions  max_position_embeddings, where dynamic scaling starts
   */
  constructor(
    readonly dims: number,
    readonly base: number,
    readonly scaling: RopeScaling | null,
    readonly maxPositions: number,
  ) {}

  /**
   * Whether tables made for a `seqLen`-long forward can differ from a shorter one's: dynamic NTK scaling
   * raises the base past max_position_embeddings, so positions then rotate by the sequence's length.
   */
  dependsOnLength(seqLen: number): boolean {
    return this.scaling?.type === "dynamic" && seqLen > this.maxPositions;
  }

  /**
   * 1 / base^(2j/r), j < r/2, in float32 as HF. Dynamic NTK scaling raises the base once the
   * sequence (`seqLen`, the cache included) is longer than max_position_embeddings.
   */
  private invFreq(seqLen: number, device: string): torch.Tensor {
    let base = this.base;
    if (this.scaling?.type === "dynamic" && seqLen > this.maxPositions) {
      const f = this.scaling.factor;
      base = base * ((f * seqLen) / this.maxPositions - (f - 1)) ** (this.dims / (this.dims - 2));
    }
    const exponents = torch.arange(0, this.dims, 2, { device }).to("float32").div(this.dims);
    const inv = torch
      .ones([this.dims / 2], { device })
      .div(torch.full([this.dims / 2], base, { device }).pow(exponents));
    return this.scaling?.type === "llama3" ? llama3Frequencies(inv, this.scaling) : inv;
  }

  /**
   * cos and sin tables for positions [b, s] (int64): [b, 1, s, r] float32, laid out as HF's
   * cat(freqs, freqs). Linear scaling divides the positions (HF: t / factor), not the frequencies.
   */
  tables(positions: torch.Tensor, seqLen: number): RotaryTables {
    let t = positions.to("float32");
    if (this.scaling?.type === "linear") t = t.div(this.scaling.factor);
    const freqs = t.unsqueeze(-1).mul(this.invFreq(seqLen, positions.device)); // [b, s, r/2]
    const emb = torch.cat([freqs, freqs], -1).unsqueeze(1); // [b, 1, s, r]
    return { cos: emb.cos(), sin: emb.sin() };
  }
}

/**
 * Llama 3.1's frequency bands (HF's _compute_llama3_parameters, float32, in its order of operations):
 * wavelengths above original/low_freq_factor are slowed by `factor`, those below original/high_freq_factor
 * kept, and the band between interpolated. Positions are not scaled, nor are cos and sin.
 */
function llama3Frequencies(inv: torch.Tensor, s: Extract<RopeScaling, { type: "llama3" }>): torch.Tensor {
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  const reciprocal = (t: torch.Tensor) => torch.ones(t.shape, { device: t.device }).div(t); // torch's scalar / tensor
  const wavelen = reciprocal(inv).mul(2 * Math.PI);
  const kept = torch.where(wavelen.gt(lowWavelen), inv.div(s.factor), inv);
  const smooth = reciprocal(wavelen)
    .mul(s.originalMaxPositions)
    .sub(s.lowFreqFactor)
    .div(s.highFreqFactor - s.lowFreqFactor);
  const smoothed = smooth.neg().add(1).mul(kept).div(s.factor).add(smooth.mul(kept));
  const medium = wavelen.lt(highWavelen).logicalNot().logicalAnd(wavelen.gt(lowWavelen).logicalNot());
  return torch.where(medium, smoothed, kept);
}

/**
 * x·cos + rotate_half(x)·sin on the first r dims of x [b, n, s, d]; the other d − r dims pass
 * through unchanged. The tables are float32; the result has x's dtype.
 */
export function applyRotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor): torch.Tensor {
  const d = x.size(-1);
  const r = cos.size(-1);
  const rot = r === d ? x : x.narrow(-1, 0, r);
  const x1 = rot.narrow(-1, 0, r / 2);
  const x2 = rot.narrow(-1, r / 2, r / 2);
  const c = cos.dtype === x.dtype ? cos : cos.to(x.dtype);
  const sn = sin.dtype === x.dtype ? sin : sin.to(x.dtype);
  const rotated = rot.mul(c).add(torch.cat([x2.neg(), x1], -1).mul(sn));
  return r === d ? rotated : torch.cat([rotated, x.narrow(-1, r, d - r)], -1);
}
