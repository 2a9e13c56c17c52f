using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// Pass <c>token-filter</c> (issue 12): GemFilter (Shi et al. 2024, "Discovering the Gems in Early Layers: Accelerating
/// Long-Context LLMs with 1000x Input Token Reduction", arXiv:2409.17422). Early layers already locate the tokens a
/// question needs: with the attention of the last query at filter layer r over the prompt,
/// <code>  s_j = avgpool_5( sum over heads h of softmax_j(scale · q_{T-1,h} · k_{h,j}) )   (layer r, keys rotated)  </code>
/// the runtime keeps the top-k tokens (plus the last few) in their original order and prefills the full model on them
/// alone with fresh positions; the filter pass costs r + 1 of the model's layers. This pass checks the model (every
/// attention recognised, layer r within its depth, canonical attention at r) and records <c>runtime.token_filter</c>;
/// <c>lcc compile</c> writes the filter model beside model.onnx (<see cref="GemFilterModel"/>). The compiled graph is
/// unchanged (exact). Refused: eviction in the same model (<c>--kv-evict</c>: the filter's cache is the full model's
/// first layers, which an evicting cache would compact).
/// </summary>
public sealed class GemFilterPass : IPass
{
    public string Name => "token-filter";
    public string Description => "GemFilter: record the filter layer and keep ratio; lcc compile writes filter.onnx (the first layers, up to the filter layer's query)";
    public bool IsExact => true;

    /// <summary>The filter model's file in the compiled folder.</summary>
    public const string FilterFile = "filter.onnx";

    public void Run(Model model, PassContext ctx)
    {
        var s = GemFilterSettings.Parse(ctx.Options);
        string where = $"{model.DisplayName}: --token-filter gemfilter";
        if (s.Layer is not int layer) throw new CompileException($"{where}: give layer=R (0-based) or calibration=FILE.jsonl to choose it by a sweep");
        var found = AttentionDiscovery.Discover(model);
        if (found.Unrecognised.Count > 0)
            throw new CompileException($"{where}: attention not recognised at {found.Unrecognised[0]}; the filter needs every layer's attention");
        int depth = found.Blocks.Count;
        if (layer >= depth) throw new CompileException($"{where}: layer={layer} is beyond the model's depth (attention layers 0-{depth - 1}); give layer=0..{depth - 1}");
        if (model.Graph.Outputs.Any(o => o.Name.StartsWith(KvEvictPolicy.IoPrefix, StringComparison.Ordinal)))
            throw new CompileException($"{where} cannot combine with --kv-evict (the filter runs the model's first layers on the shared cache an evicting cache compacts); drop one of the two");
        var scoring = ExposeQueriesForEviction.LayerRecord(found.Blocks[layer], GemFilterModel.QueryOutput, $"{where}: layer {layer}", "--token-filter gemfilter");
        ctx.RuntimeConfig[TokenFilterPolicy.Key] = new Dictionary<string, object?>
        {
            ["method"] = "gemfilter", ["layer"] = layer, ["keep"] = s.Keep, ["recent"] = s.Recent, ["pool"] = s.Pool,
            ["file"] = FilterFile, ["scoring"] = scoring,
        };
        ctx.Count("filter layer", 1);
        string keep = s.Keep < 1 ? $"{s.Keep * 100:0.##}%" : s.Keep.ToString(CultureInfo.InvariantCulture);
        ctx.Note($"gemfilter: layer {layer} of {depth} (filter runs {layer + 1} layers), keep {keep} + last {s.Recent}, pool {s.Pool}; filter model {FilterFile}");
    }
}
