using System.CommandLine;
using LongCtx.Compiler;
using LongCtx.Compiler.Passes;
using LongCtx.Passes.Eviction;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc compile --token-filter gemfilter:layer=R,keep=K</c> (issue 12): the <c>token-filter</c> pipeline step and the
/// filter model written beside model.onnx.
/// </summary>
internal static class TokenFilterOptions
{
    public static Option<string?> TokenFilter { get; } = new("--token-filter")
    {
        Description = "GemFilter two-pass prefill: gemfilter:layer=R,keep=1/8[,recent=8,pool=5] (R 0-based; or calibration=FILE.jsonl instead of layer= to choose R by a sweep; keep: tokens or a fraction)",
    };

    public static void AddTo(Command cmd) => cmd.Add(TokenFilter);

    /// <summary>The pass options (layer resolved), or null without --token-filter.</summary>
    public static IReadOnlyDictionary<string, string>? Options(ParseResult pr) =>
        pr.GetValue(TokenFilter) is { } spec ? GemFilterSettings.FromSpec(spec) : null;

    public static PipelineStep? Step(IReadOnlyDictionary<string, string>? options) => options is null ? null : GemFilterSettings.Step(options);

    public static IReadOnlyList<CompanionModel> Companions(IReadOnlyDictionary<string, string>? options) =>
        options is null || GemFilterSettings.Parse(options).Layer is not int layer ? []
        : [new CompanionModel(GemFilterPass.FilterFile, m => GemFilterModel.Build(m, layer))];
}
