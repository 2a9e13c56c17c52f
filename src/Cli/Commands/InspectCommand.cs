using System.CommandLine;
using System.Text.Json;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.Inspect;
using LongCtx.Contract;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc inspect MODEL [--json]</c>: I/O, opsets, op histogram, parameters, external data; for a compiled folder also what lcc applied.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<FileInfo>("model") { Description = "ONNX model file, or a folder written by lcc compile" };
        var json = new Option<bool>("--json") { Description = "print JSON instead of a table" };
        var memory = new Option<string?>("--memory") { Description = "memory budget for the concurrency estimate, e.g. 24GiB" };
        var bandwidth = new Option<string?>("--bandwidth") { Description = "memory bandwidth for the decode time bound, e.g. 50GB/s" };
        var context = new Option<string>("--context") { Description = "context length for the cost model, e.g. 32k (k = 1024)", DefaultValueFactory = _ => "32k" };
        var cmd = new Command("inspect", "Describe a model: inputs/outputs, opsets, op histogram, parameters, external data, architecture card and long-context cost model") { model, json, memory, bandwidth, context };
        cmd.SetAction(pr => Cli.Guard(() =>
        {
            var costOptions = new CostOptions(Units.ParseTokens(pr.GetValue(context)!, "--context"),
                pr.GetValue(memory) is { } mem ? Units.ParseBytes(mem, "--memory") : null,
                pr.GetValue(bandwidth) is { } bw ? Units.ParseBandwidth(bw, "--bandwidth") : null);
            var file = DiffCommand.Resolve(pr.GetValue(model)!);
            var m = Cli.Load(file);
            var report = ModelInspector.Inspect(m);
            var manifest = LongCtxManifest.TryReadFolder(file.DirectoryName ?? ".");
            var attention = AttentionDiscovery.Discover(m);
            // prefer the card read off the recognised attention blocks (it knows heads and hidden); fall back to the I/O contract
            string? whyNoCard = null;
            var card = attention.Blocks.Count > 0 ? ArchitectureCard.FromBlocks(m, attention.Blocks, out whyNoCard) : null;
            card ??= ArchitectureCard.FromModelIo(m, out whyNoCard);
            if (card is not null && manifest?.Runtime.KvQuant is { } kq) card = card.WithKvQuantization(kq);
            var cost = card is null ? null : CostModel.Compute(card, costOptions);
            var kvq = manifest?.Runtime.KvQuant is { } q ? KvCacheFootprint.Of(m, q) : null;
            var kivi = manifest?.Runtime.Kivi is { } kl ? KiviFootprint.Of(kl) : null;
            if (pr.GetValue(json))
            {
                var node = JsonSerializer.SerializeToNode(report, Cli.Json)!.AsObject();
                node["attention"] = JsonSerializer.SerializeToNode(attention, Cli.Json);
                node["architecture"] = card is null ? null : JsonSerializer.SerializeToNode(card, Cli.Json);
                node["cost"] = cost is null ? null : JsonSerializer.SerializeToNode(cost, Cli.Json);
                if (whyNoCard is not null) node["architecture_note"] = whyNoCard;
                if (manifest is not null) node["longctx"] = JsonSerializer.SerializeToNode(manifest, LongCtxManifest.JsonOptions);
                if (kvq is not null) node["kv_cache"] = JsonSerializer.SerializeToNode(kvq, Cli.Json);
                if (kivi is not null) node["kv_cache"] = JsonSerializer.SerializeToNode(kivi, Cli.Json);
                Console.Out.Write(node.ToJsonString(Cli.Json) + "\n");
                return Cli.Ok;
            }
            Console.Out.Write(report.ToText());
            Console.Out.Write(AttentionReport.ToText(attention));
            Console.Out.Write(card is null ? whyNoCard + "\n" : card.ToText() + cost!.ToText());
            if (manifest is not null) Console.Out.Write(RenderManifest(manifest));
            if (kvq is not null) Console.Out.Write(kvq.ToText());
            if (kivi is not null) Console.Out.Write(kivi.ToText());
            return Cli.Ok;
        }));
        return cmd;
    }

    private static string RenderManifest(LongCtxManifest m)
    {
        var sb = new System.Text.StringBuilder();
        string sha = m.Source?.Sha256 is { Length: >= 16 } h ? h[..16] + "…" : m.Source?.Sha256 ?? "";
        sb.Append($"compiled by {m.Tool} from {m.Source?.Path} (sha256 {sha})\n");
        foreach (var p in m.Pipeline)
        {
            var counts = p.Counts.Select(kv => $"{kv.Value} {kv.Key}");
            sb.Append($"  {p.Pass,-24} {(p.Exact ? "exact" : "approximate"),-12} {string.Join(", ", counts)}\n");
        }
        if (!m.Runtime.IsEmpty)
            sb.Append("  runtime: ").Append(JsonSerializer.Serialize(m.Runtime, new JsonSerializerOptions(LongCtxManifest.JsonOptions) { WriteIndented = false })).Append('\n');
        if (m.Runtime.Other?.GetValueOrDefault("attention") is { ValueKind: JsonValueKind.Object } at && at.TryGetProperty("layers", out var rows) && rows.ValueKind == JsonValueKind.Array)
        {
            // lower-attention's per-layer record: which op runs each layer, with which pattern, or why it was kept
            string pars = string.Join(" ", at.EnumerateObject().Where(p => p.Name is not ("op" or "pattern" or "layers" or "calibration")).Select(p => $"{p.Name}={p.Value}"));
            foreach (var r in rows.EnumerateArray())
            {
                string? Str(string k) => r.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Null ? v.ToString() : null;
                sb.Append($"  attention layer {Str("layer"),-3} {Str("op"),-34} {Str("pattern") ?? "-"}")
                  .Append(Str("options") is { } own ? $" ({own})" // auto: each layer's own calibrated options
                      : Str("pattern") is not (null or "dense") && pars.Length > 0 ? $" ({pars})" : "")
                  .Append(Str("density") is { } dens ? $"  expected density {dens}" : "")
                  .Append(Str("calibrated_density") is { } cd ? $" (calibrated {cd}, error {Str("calibrated_error")})" : "")
                  .Append(Str("kept") is { } k ? $"  kept: {k}" : "").Append(InspectHeads.Of(r)).Append('\n');
            }
        }
        if (KvEvictPolicy.From(m.Runtime, "longctx.json") is { } ev)
            sb.Append(EvictLine(ev)).Append('\n');
        if (TokenFilterPolicy.From(m.Runtime, "longctx.json") is { } tf)
            sb.Append($"  token filter: {tf.Method} layer={tf.Layer} keep={(tf.Keep < 1 ? $"{tf.Keep * 100:0.##}%" : $"{tf.Keep:0}")} recent={tf.Recent} pool={tf.Pool}; filter model {tf.File} (layers 0-{tf.Layer}), then the full model prefills the kept tokens\n");
        return sb.ToString();
    }

    /// <summary>The kv-evict policy in one line: method, sizes, and the layers the runtime scores.</summary>
    internal static string EvictLine(KvEvictPolicy ev)
    {
        static string S(double v) => v < 1 ? $"{v * 100:0.##}%" : $"{v:0}";
        string sizes = ev.Method == "h2o" ? $"heavy={S(ev.Heavy)} recent={S(ev.Recent)}"
            : ev.Method == "actqkv" ? $"budget={S(ev.Budget)} window={ev.Window} mass={ev.Mass:0.###} (activation-aware probe query, per-layer cut-off)"
            : ev.Method == "lemo" ? $"budget={S(ev.Budget)} window={ev.Window} tau={ev.Tau:0.###} (token elimination before each further prompt chunk and after the prompt)"
            : ev.Method == "adakv" ? $"budget={S(ev.Budget)} window={ev.Window} pool={ev.Pool} floor={ev.Floor:0.###} (heads of a layer share its budget; per-head lengths masked through attention_bias)"
            : $"budget={S(ev.Budget)} window={ev.Window} pool={ev.Pool}" + (ev.Method == "pyramidkv" ? $" beta={ev.Beta:0.##}" : "")
              + (ev.Method == "pyramidkv" && ev.Layers.All(l => l.Bias is not null) ? $" ada=1 floor={ev.Floor:0.###} (heads of a layer share its budget)" : "");
        return $"  kv eviction: {ev.Method} {sizes}; the runtime scores {ev.Layers.Count} layers from their exposed queries ({string.Join(", ", ev.Layers.Select(l => l.Query))})";
    }
}
