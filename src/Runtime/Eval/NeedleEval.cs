using System.Diagnostics;
using System.Text.Json;
using LongCtx.Runtime.Sessions;

namespace LongCtx.Runtime.Eval;

/// <summary>One needle-retrieval prompt: token ids and the expected next token.</summary>
public sealed record NeedleItem(int Id, int[] Prompt, int Expected, double? Depth);

/// <summary>Accuracy of a model on a needle set.</summary>
public sealed record NeedleResult(string Model, string File, int N, int Correct, double Accuracy, int Chunk,
    bool Chunked, double Seconds, string CorrectMask, IReadOnlyList<int> Predictions);

/// <summary>
/// Greedy next-token accuracy: argmax of the logits at the last prompt position == expected
/// (the metric of recall-public/baseline.json). Each prompt goes through a fresh KV cache in
/// chunks of <c>chunk</c> tokens. With <c>cut</c> (an evicting model, <see cref="EvictionSplit"/>) the prompt is prefilled up
/// to the cut, the cache compresses, and the rest is fed through the compressed cache.
/// </summary>
public static class NeedleEval
{
    /// <summary>Largest needle file and line read (a 1M-token prompt as JSON ids is under 16 MiB).</summary>
    public const long FileCap = 4L << 30;
    public const int LineCap = 64 << 20;

    /// <summary>Reads a JSONL needle file: each line has "prompt" (ids) and "expected" (or "answer"/"target").</summary>
    public static List<NeedleItem> Read(string path, int limit = 0)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"needle file {path} not found", path);
        var items = new List<NeedleItem>();
        foreach (var (lineNo, line) in LongCtx.Contract.SafeFile.ReadLines(path, FileCap, LineCap, $"needle file {path}"))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (limit > 0 && items.Count >= limit) break;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException je) { throw new RuntimeException($"{path}:{lineNo}: not JSON ({je.Message})", je); }
            using var _ = doc;
            var r = doc.RootElement;
            if (!r.TryGetProperty("prompt", out var p) || p.ValueKind != JsonValueKind.Array)
                throw new RuntimeException($"{path}:{lineNo}: no \"prompt\" array of token ids");
            JsonElement e = default;
            bool found = false;
            foreach (var k in new[] { "expected", "answer", "target" })
                if (r.TryGetProperty(k, out e)) { found = true; break; }
            if (!found || e.ValueKind != JsonValueKind.Number)
                throw new RuntimeException($"{path}:{lineNo}: no \"expected\" token id");
            int Int(JsonElement x, string field) => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out var v) && (field == "id" || v >= 0)
                ? v : throw new RuntimeException($"{path}:{lineNo}: \"{field}\" must be a{(field == "id" ? "n" : " non-negative")} 32-bit integer, got {Clip(x.GetRawText())}");
            int id = r.TryGetProperty("id", out var i) ? Int(i, "id") : items.Count;
            double? depth = r.TryGetProperty("depth", out var d) && d.ValueKind == JsonValueKind.Number ? d.GetDouble() : null;
            items.Add(new NeedleItem(id, p.EnumerateArray().Select(x => Int(x, "prompt")).ToArray(), Int(e, "expected"), depth));
        }
        return items;
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "...";

    /// <param name="prefixCache">when given, each prompt reuses the cached KV of its longest cached prefix</param>
    public static NeedleResult Run(LongCtxModel model, string file, IReadOnlyList<NeedleItem> items, int chunk,
        IProgress<int>? progress = null, CancellationToken ct = default, PrefixCache? prefixCache = null, Func<NeedleItem, int>? cut = null)
    {
        var sw = Stopwatch.StartNew();
        var preds = new int[items.Count];
        using var g = model.CreateGenerator();
        for (int i = 0; i < items.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            g.Reset();
            var logits = cut is not null ? EvictionSplit.Run(g, items[i].Prompt, cut(items[i]), chunk, ct)
                : prefixCache is null ? g.Prefill(items[i].Prompt, chunk, null, ct) : prefixCache.Prefill(g, items[i].Prompt, chunk, ct);
            preds[i] = Sampler.ArgMax(logits);
            progress?.Report(i + 1);
        }
        int correct = 0;
        var mask = new char[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            bool ok = preds[i] == items[i].Expected;
            correct += ok ? 1 : 0;
            mask[i] = ok ? '1' : '0';
        }
        return new NeedleResult(model.Name, Path.GetFileName(file), items.Count, correct,
            items.Count == 0 ? 0 : (double)correct / items.Count, chunk, model.SupportsChunkedPrefill && chunk > 0,
            Math.Round(sw.Elapsed.TotalSeconds, 2), new string(mask), preds);
    }
}
