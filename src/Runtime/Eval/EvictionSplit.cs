using System.Text.Json;

namespace LongCtx.Runtime.Eval;

/// <summary>
/// Where a needle prompt is cut for an evicting model (issue 12): the cache is compressed after the prefix (the prompt
/// "ends" there) and the rest is fed through the compressed cache, so the prediction depends on what eviction kept.
/// <list type="bullet">
/// <item>question included (default): the cut is before the last token (ANSWER), so the observation window holds
/// the question: SnapKV scores with it, as the field's default.</item>
/// <item><c>--evict-before-question</c> (kvpress's question-agnostic setting): the cut is at the last QUERY token, so
/// compression sees only the haystack and the question (QUERY KEY ANSWER) comes after. The QUERY id is
/// <c>vocab.QUERY</c> of the config.json beside the needle file (recall-public's prompt format "..., QUERY KEY_i ANSWER").</item>
/// </list>
/// </summary>
public static class EvictionSplit
{
    /// <summary>The cut that keeps the question in the compressed prefix: all but the last token.</summary>
    public static Func<NeedleItem, int> QuestionIncluded { get; } = item => item.Prompt.Length - 1;

    /// <summary>The cut before the last <paramref name="queryToken"/>; a prompt without it is an error naming the prompt.</summary>
    public static Func<NeedleItem, int> BeforeQuestion(int queryToken, string file) => item =>
    {
        int at = Array.LastIndexOf(item.Prompt, queryToken);
        return at > 0 ? at : throw new RuntimeException($"{file}: prompt {item.Id} has no QUERY token {queryToken}; --evict-before-question needs the question to start with it");
    };

    /// <summary>The QUERY token id from config.json (vocab.QUERY) beside <paramref name="needleFile"/>.</summary>
    public static int QueryToken(string needleFile)
    {
        var config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(needleFile))!, "config.json");
        if (!File.Exists(config)) throw new RuntimeException($"{needleFile}: --evict-before-question needs config.json beside it (vocab.QUERY: the token that starts the question); none at {config}");
        try
        {
            using var doc = JsonDocument.Parse(LongCtx.Contract.LongCtxFiles.ReadText(config)); // capped, regular files only
            if (doc.RootElement.TryGetProperty("vocab", out var v) && v.TryGetProperty("QUERY", out var q) && q.TryGetInt32(out int id)) return id;
        }
        catch (JsonException e) { throw new RuntimeException($"{config}: not JSON ({e.Message.Split('\n')[0]}); --evict-before-question reads vocab.QUERY from it", e); }
        throw new RuntimeException($"{config}: no vocab.QUERY; --evict-before-question needs the token that starts the question");
    }

    /// <summary>Prefills <paramref name="prompt"/>[..cut] (the cache compresses at its end), then feeds the rest; the last logits.</summary>
    public static float[] Run(Generator g, int[] prompt, int cut, int chunk, CancellationToken ct)
    {
        g.Prefill(prompt[..cut], chunk, null, ct);
        return g.Forward(prompt.AsSpan(cut), ct);
    }
}
