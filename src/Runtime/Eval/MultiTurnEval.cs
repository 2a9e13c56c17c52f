using System.Diagnostics;
using System.Text.Json;
using LongCtx.Contract;
using LongCtx.Runtime.Sessions;

namespace LongCtx.Runtime.Eval;

/// <summary>The token layout of a key-value retrieval vocabulary (recall-public config.json "vocab").</summary>
public sealed record RetrievalVocab(int Query, int Answer, int KeyFirst, int KeyLast, int ValueFirst, int ValueLast)
{
    public bool IsKey(int t) => t >= KeyFirst && t <= KeyLast;
    public bool IsValue(int t) => t >= ValueFirst && t <= ValueLast;

    /// <summary>Reads vocab.QUERY, vocab.ANSWER, vocab.keys.first/last and vocab.values.first/last from a config.json.</summary>
    public static RetrievalVocab Read(string configPath)
    {
        if (!File.Exists(configPath))
            throw new RuntimeException($"{configPath} not found: --multi-turn needs the vocabulary layout (config.json with vocab.QUERY, ANSWER, keys, values) next to the needle file");
        try
        {
            using var doc = JsonDocument.Parse(SafeFile.ReadText(configPath, LongCtxFiles.SmallTextCap, what: configPath));
            var v = doc.RootElement.GetProperty("vocab");
            return new(v.GetProperty("QUERY").GetInt32(), v.GetProperty("ANSWER").GetInt32(),
                v.GetProperty("keys").GetProperty("first").GetInt32(), v.GetProperty("keys").GetProperty("last").GetInt32(),
                v.GetProperty("values").GetProperty("first").GetInt32(), v.GetProperty("values").GetProperty("last").GetInt32());
        }
        catch (UnsafeFileException e) { throw new RuntimeException(e.Message, e); }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new RuntimeException($"{configPath}: no vocab.QUERY / ANSWER / keys.first,last / values.first,last ({e.Message}); --multi-turn needs the key-value vocabulary layout", e);
        }
    }
}

/// <summary>One shared-context conversation: a haystack and the (key, value) questions asked about it, in turn order.</summary>
public sealed record MultiTurnItem(int Id, int[] Haystack, IReadOnlyList<(int Key, int Value)> Questions);

/// <summary>One turn over all conversations: accuracy and mean time to first token of each way of serving it.</summary>
public sealed record TurnResult(int Turn, int N, int CorrectReuse, int? CorrectRecompute, int? Agree, double TtftReuseMs,
    double? TtftRecomputeMs, double? TtftPrefixCacheMs, int ContextTokens)
{
    public double AccuracyReuse => N == 0 ? 0 : (double)CorrectReuse / N;
    public double? AccuracyRecompute => CorrectRecompute is { } c && N > 0 ? (double)c / N : null;
    /// <summary>TTFT with the reused cache / TTFT recomputing the whole context.</summary>
    public double? Ratio => TtftRecomputeMs is { } r && r > 0 ? TtftReuseMs / r : null;
}

public sealed record MultiTurnResult(string Model, string File, int Turns, int Conversations, int Skipped, int Chunk,
    IReadOnlyList<TurnResult> PerTurn, double Seconds, PrefixCacheStats? PrefixCache);

/// <summary>
/// Multi-turn shared-context retrieval (SCBench, Li et al. 2024, arXiv:2412.10319: one long context, several queries
/// over it in turns). Built from a needle set whose prompts are BOS, a haystack with KEY VALUE pairs, QUERY KEY ANSWER
/// (recall-public): the haystack is the prompt without its last three tokens, its pairs are the adjacent (key, value)
/// tokens in it, so every key of the haystack can be asked. Turn 1 asks the prompt's own needle (turn 1 = the single-turn
/// eval); turns 2..N ask the haystack's other keys in a seeded shuffle. A turn appends [previous answer,] QUERY KEY ANSWER,
/// the previous answer being the model's own greedy prediction (as in a conversation); correct = argmax == the key's value.
/// Conversations whose haystack has fewer than N keys are skipped (counted). Each turn is served, interleaved: (1) reuse:
/// one <see cref="Conversation"/> whose cache persists across turns, only the new tokens are prefilled; (2) recompute: a
/// fresh cache prefilling the whole context so far (same tokens); (3) with a prefix cache: a fresh generator through
/// <see cref="Sessions.PrefixCache"/>. Time to first token = the prefill call that yields the answer's logits.
/// </summary>
public static class MultiTurnEval
{
    /// <summary>Conversations of <paramref name="turns"/> questions from needle items (items with fewer keys are skipped).</summary>
    public static (List<MultiTurnItem> Items, int Skipped) Build(IReadOnlyList<NeedleItem> needles, RetrievalVocab vocab, int turns, int limit = 0)
    {
        if (turns < 1) throw new ArgumentException($"--multi-turn {turns}: ask at least one question per conversation");
        var items = new List<MultiTurnItem>();
        int skipped = 0;
        foreach (var n in needles)
        {
            if (limit > 0 && items.Count >= limit) break;
            var p = n.Prompt;
            if (p.Length < 4 || p[^3] != vocab.Query || !vocab.IsKey(p[^2]) || p[^1] != vocab.Answer)
                throw new RuntimeException($"needle prompt {n.Id} does not end with QUERY KEY ANSWER ({vocab.Query}, a key in [{vocab.KeyFirst}, {vocab.KeyLast}], {vocab.Answer}); --multi-turn needs a key-value retrieval set");
            var haystack = p[..^3];
            var pairs = new Dictionary<int, int>();
            for (int i = 0; i + 1 < haystack.Length; i++)
                if (vocab.IsKey(haystack[i]) && vocab.IsValue(haystack[i + 1])) pairs.TryAdd(haystack[i], haystack[i + 1]);
            int needle = p[^2];
            if (!pairs.TryGetValue(needle, out int v) || v != n.Expected)
                throw new RuntimeException($"needle prompt {n.Id}: key {needle} is not followed by its expected value {n.Expected} in the haystack");
            if (pairs.Count < turns) { skipped++; continue; }
            var others = pairs.Where(kv => kv.Key != needle).Select(kv => (kv.Key, kv.Value)).ToList();
            var rng = new Random(n.Id);
            for (int i = others.Count - 1; i > 0; i--) { int j = rng.Next(i + 1); (others[i], others[j]) = (others[j], others[i]); }
            items.Add(new MultiTurnItem(n.Id, haystack, [(needle, v), .. others.Take(turns - 1)]));
        }
        return (items, skipped);
    }

    public static MultiTurnResult Run(LongCtxModel model, string file, RetrievalVocab vocab, IReadOnlyList<MultiTurnItem> items, int turns, int skipped,
        int chunk, bool recompute, PrefixCache? prefixCache = null, IProgress<int>? progress = null, CancellationToken ct = default)
    {
        var sw = Stopwatch.StartNew();
        var correct = new int[turns]; var correctRe = new int[turns]; var agree = new int[turns];
        var ttft = new double[turns]; var ttftRe = new double[turns]; var ttftPc = new double[turns];
        var context = new long[turns];
        int done = 0;
        foreach (var item in items)
        {
            using var conv = new Conversation(model);
            var all = new List<int>(item.Haystack);
            int previous = -1;
            for (int t = 0; t < turns; t++)
            {
                ct.ThrowIfCancellationRequested();
                var (key, value) = item.Questions[t];
                int[] turn = previous < 0 ? [.. item.Haystack, vocab.Query, key, vocab.Answer] : [previous, vocab.Query, key, vocab.Answer];
                if (previous >= 0) all.Add(previous);
                all.AddRange(turn[^3..]);

                var clock = Stopwatch.StartNew();
                int pred = Sampler.ArgMax(conv.Append(turn, chunk, null, ct));
                ttft[t] += clock.Elapsed.TotalMilliseconds;
                correct[t] += pred == value ? 1 : 0;
                context[t] += all.Count;

                if (recompute)
                {
                    using var g = model.CreateGenerator();
                    clock.Restart();
                    int re = Sampler.ArgMax(g.Prefill(all, chunk, null, ct));
                    ttftRe[t] += clock.Elapsed.TotalMilliseconds;
                    correctRe[t] += re == value ? 1 : 0;
                    agree[t] += re == pred ? 1 : 0;
                }
                if (prefixCache is not null)
                {
                    using var g = model.CreateGenerator();
                    clock.Restart();
                    prefixCache.Prefill(g, all, chunk, ct);
                    ttftPc[t] += clock.Elapsed.TotalMilliseconds;
                }
                previous = pred;
            }
            progress?.Report(++done);
        }
        int n = items.Count;
        double Mean(double x) => n == 0 ? 0 : Math.Round(x / n, 2);
        var perTurn = Enumerable.Range(0, turns).Select(t => new TurnResult(t + 1, n, correct[t],
            recompute ? correctRe[t] : null, recompute ? agree[t] : null, Mean(ttft[t]),
            recompute ? Mean(ttftRe[t]) : null, prefixCache is null ? null : Mean(ttftPc[t]), n == 0 ? 0 : (int)(context[t] / n))).ToList();
        return new MultiTurnResult(model.Name, Path.GetFileName(file), turns, n, skipped, chunk, perTurn,
            Math.Round(sw.Elapsed.TotalSeconds, 2), prefixCache?.Stats());
    }
}
