using System.Text.Json.Serialization;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Analysis;

/// <summary>
/// Rotary position embedding of one attention block (Su et al. 2021, "RoFormer", arXiv:2104.09864):
/// x' = x * cos(p * inv_freq) + rotate(x) * sin(p * inv_freq), inv_freq[i] = theta^(-2i/d).
/// </summary>
/// <param name="Present">whether the block rotates q and k at all</param>
/// <param name="Theta">base recovered from the inv_freq constants or the cos cache (null when unknown)</param>
/// <param name="RotaryDim">number of rotated channels per head (== head_dim unless partial rotary)</param>
/// <param name="Interleaved">pairs (2i, 2i+1) rotated (GPT-J style) instead of halves (i, i+d/2)</param>
/// <param name="OriginalMaxPositions">length of a precomputed cos cache, when the model has one</param>
/// <param name="Source">where the parameters came from: "inv_freq" | "cos_cache" | "attribute" | "none"</param>
public sealed record RopeInfo(bool Present, double? Theta, int RotaryDim, bool Interleaved, int? OriginalMaxPositions, string Source)
{
    public static readonly RopeInfo None = new(false, null, 0, false, null, "none");
}

/// <summary>One recognised attention block (one per decoder layer). The facts passes start from.</summary>
/// <param name="Layer">0-based layer index, in graph order</param>
/// <param name="Form">"torch-matmul-softmax" | "ms-mha-rotary" | "ms-gqa" | "onnx-attention" | "bert-encoder"</param>
/// <param name="KvLayout">layout of the cache tensors: "BHSD" = [batch, kv_heads, seq, head_dim]</param>
/// <param name="MaskSource">graph input the attention mask derives from (null when none)</param>
/// <param name="Match">IR handles for rewriting; not serialised</param>
public sealed record AttentionBlock(int Layer, string Form,
    int NumHeads, int KvNumHeads, int HeadDim, int Hidden, bool Causal, double Scale, RopeInfo Rope,
    string? PastKey, string? PastValue, string? PresentKey, string? PresentValue, string KvLayout, string? MaskSource,
    [property: JsonIgnore] AttentionMatch Match);

/// <summary>What discovery found: the blocks, and for every attention-like site it could not read, where and why it stopped.</summary>
/// <param name="Unrecognised">"layer N: matching stopped at &lt;node&gt;: &lt;reason&gt;"</param>
public sealed record DiscoveryResult(IReadOnlyList<AttentionBlock> Blocks, IReadOnlyList<string> Unrecognised);
