using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Attention;

/// <summary>
/// IR handles of one recognised attention block, for rewrites. Values are compared by reference and are only valid
/// for the model discovery ran on (and until it is mutated).
/// </summary>
/// <param name="Anchor">the node discovery anchored on (Softmax for unfused forms, the fused op otherwise)</param>
/// <param name="Query">projected queries before the head split, [B,S,Hq*D] (null when fused QKV is not split)</param>
/// <param name="Key">projected keys before the head split and RoPE, [B,S,Hkv*D]</param>
/// <param name="ValueIn">projected values before the head split, [B,S,Hkv*D]</param>
/// <param name="Output">attention output after the head merge, [B,S,Hq*D] (what feeds the output projection)</param>
/// <param name="QWeight">q/k/v/o projection weights when they are initializers (MatMul right operands)</param>
/// <param name="PastKey">cache inputs / present outputs (graph values) when the block has a cache</param>
/// <param name="Positions">graph input the RoPE positions come from (position_ids), when known</param>
/// <param name="InvFreq">the inv_freq constant (length RotaryDim/2), when RoPE is computed in the graph</param>
/// <param name="CosCache">precomputed cos/sin caches [maxPos, RotaryDim/2], when the model has them</param>
/// <param name="Mask">the additive mask value (unfused forms), or the mask input of the fused op</param>
/// <param name="Nodes">the nodes of the block between the projections and the output (what a rewrite replaces)</param>
/// <param name="RopeMultiplier">scalar multiplying cos and sin (YaRN / LongRoPE attention temperature), 1 when absent</param>
public sealed record AttentionMatch(
    Node Anchor,
    Value? Query, Value? Key, Value? ValueIn, Value Output,
    Value? QWeight, Value? KWeight, Value? VWeight, Value? OWeight,
    Value? PastKey, Value? PastValue, Value? PresentKey, Value? PresentValue,
    Value? Positions, float[]? InvFreq, Value? CosCache, Value? SinCache,
    Value? Mask, IReadOnlyList<Node> Nodes, double RopeMultiplier = 1.0);
