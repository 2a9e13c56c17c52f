using LongCtx.Compiler.IR;

namespace LongCtx.Models;

/// <summary>
/// Builder registry: form name -> builder. torch = <see cref="TorchStyleDecoder"/> (issue form a); gqa* =
/// <see cref="GqaDecoder"/> (c); mha = <see cref="GenaiMhaDecoder"/> (b); opset24 / opset24-static =
/// <see cref="Opset24Decoder"/> with a Concat or TensorScatter cache (d, static cache length = MaxPositions);
/// bert = <see cref="BertEncoder"/> (e); ort-gpt2 = <see cref="OrtGpt2Decoder"/> (onnxruntime.transformers GPT-2:
/// com.microsoft.Attention with packed QKV and packed past_N; kv heads = heads, hidden = heads * head_dim, own weights). All decoders draw the same <see cref="DecoderWeights"/> for a config, so
/// they compute the same function (except gqa-norope, which has no RoPE).
/// </summary>
public static class Builders
{
    public static IReadOnlyList<string> Forms { get; } = ["torch", "gqa", "gqa-separate-rope", "gqa-norope", "mha", "opset24", "opset24-static", "bert", "ort-gpt2"];

    public static Model Build(string form, DecoderConfig c) => form switch
    {
        "torch" => TorchStyleDecoder.Build(c),
        "gqa" => GqaDecoder.Build(c, GqaRope.Fused),
        "gqa-separate-rope" => GqaDecoder.Build(c, GqaRope.Separate),
        "gqa-norope" => GqaDecoder.Build(c, GqaRope.None),
        "mha" => GenaiMhaDecoder.Build(c),
        "opset24" => Opset24Decoder.Build(c),
        "opset24-static" => Opset24Decoder.BuildStaticCache(c, c.MaxPositions),
        "bert" => BertEncoder.Build(c),
        "ort-gpt2" => OrtGpt2Decoder.Build(c with { KvHeads = c.Heads, Hidden = c.Heads * c.HeadDim }),
        _ => throw new ArgumentException($"unknown decoder form '{form}'; known: {string.Join(", ", Forms)}"),
    };
}
