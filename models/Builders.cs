using LongCtx.Compiler.IR;

namespace LongCtx.Models;

/// <summary>Builder registry: form name -> builder (names used by tests and <c>lcc</c> tooling).</summary>
public static class Builders
{
    public static IReadOnlyList<string> Forms { get; } = ["torch", "gqa", "gqa-separate-rope", "gqa-norope", "mha", "opset24", "bert"];

    public static Model Build(string form, DecoderConfig c) => form switch
    {
        "torch" => TorchStyleDecoder.Build(c),
        "gqa" => GqaDecoder.Build(c, GqaRope.Fused),
        "gqa-separate-rope" => GqaDecoder.Build(c, GqaRope.Separate),
        "gqa-norope" => GqaDecoder.Build(c, GqaRope.None),
        "mha" => GenaiMhaDecoder.Build(c),
        "opset24" => Opset24Decoder.Build(c),
        "bert" => BertEncoder.Build(c),
        _ => throw new ArgumentException($"unknown decoder form '{form}'; known: {string.Join(", ", Forms)}"),
    };
}
