using System.Globalization;
using LongCtx.Passes.Attention;

namespace LongCtx.Cli.Calibration;

/// <summary>One KV head's choice: a candidate (null = dense) with the density and error it measured at that head.</summary>
public sealed record HeadChoice(int Layer, int KvHead, AttentionCandidate? Candidate, double Density, double Error)
{
    public string Pattern => Candidate?.Pattern ?? "dense";
    public IReadOnlyDictionary<string, string> Options => Candidate?.Options ?? new Dictionary<string, string>();
}

/// <summary>
/// Per layer AND KV head choice of the sparse prefill pattern and budget within one FLOP budget for the whole model (issue 10
/// item 2). The density of a head (attended causal pairs / causal pairs, from <see cref="AttentionCalibration.ScoreLayer"/>)
/// is its share of dense attention FLOPs, and every KV head costs the same, so the model's FLOP share is the mean density
/// over all (layer, KV head) pairs; the budget is <c>mean density &lt;= budget</c>. The options of a head are the candidates
/// plus dense (density 1, error 0). Greedy, after MInference's kernel-aware search (Jiang et al. 2024, arXiv:2407.02490
/// sec. 3.2) made budget-aware as a knapsack by marginal ratio:
/// <list type="number">
/// <item>every head starts at its sparsest option (ties: less error, then the earlier candidate);</item>
/// <item>repeatedly, among the moves of one head to an option with less error that keep the mean density within the budget,
/// take the one with the largest error decrease per added density (a move that adds no density first, by its decrease);
/// ties keep the earlier (layer, head, option); stop when no move fits.</item>
/// </list>
/// Each move lowers one head's error, so it ends after at most heads x options moves; the result is a pure function of
/// the scores (deterministic for a seed, since the scores are). When even the sparsest options exceed the budget they are
/// kept and a note says so.
/// </summary>
public static class PerHeadChoice
{
    /// <summary>The choice for every (layer, KV head) of <paramref name="scores"/>[layer][candidate], and a note or null.</summary>
    public static (IReadOnlyList<IReadOnlyList<HeadChoice>> Heads, string? Note) Choose(IReadOnlyList<IReadOnlyList<CandidateScore>> scores, double budget)
    {
        // options[(l, h)]: the candidates then dense
        var options = new List<HeadChoice[]>();
        var slots = new List<(int Layer, int Head)>();
        for (int l = 0; l < scores.Count; l++)
            for (int h = 0; h < scores[l][0].HeadDensity.Length; h++)
            {
                slots.Add((l, h));
                options.Add(scores[l].Select(s => new HeadChoice(l, h, s.Candidate, s.HeadDensity[h], s.HeadError[h]))
                    .Append(new HeadChoice(l, h, null, 1.0, 0.0)).ToArray());
            }
        int n = slots.Count;
        var at = options.Select(o => Enumerable.Range(0, o.Length)
            .Aggregate((a, b) => o[b].Density < o[a].Density || o[b].Density == o[a].Density && o[b].Error < o[a].Error ? b : a)).ToArray();
        double total = Enumerable.Range(0, n).Sum(i => options[i][at[i]].Density), limit = budget * n;
        string? note = total > limit + 1e-12
            ? $"the sparsest choice of every head already attends {Fmt(total / n)} of the causal pairs, over the density budget {Fmt(budget)}; kept it (calibrate with longer prompts, --length, or a larger --density)"
            : null;
        while (true)
        {
            int bestI = -1, bestO = -1;
            double bestFree = 0, bestRatio = 0;
            for (int i = 0; i < n; i++)
            {
                var cur = options[i][at[i]];
                for (int o = 0; o < options[i].Length; o++)
                {
                    var c = options[i][o];
                    double gain = cur.Error - c.Error, added = c.Density - cur.Density;
                    if (gain <= 0 || total + added > limit + 1e-12) continue;
                    if (added <= 0)
                    {
                        if (gain > bestFree) (bestFree, bestI, bestO) = (gain, i, o);
                    }
                    else if (bestFree == 0 && gain / added > bestRatio) (bestRatio, bestI, bestO) = (gain / added, i, o);
                }
            }
            if (bestI < 0) break;
            total += options[bestI][bestO].Density - options[bestI][at[bestI]].Density;
            at[bestI] = bestO;
        }
        var result = scores.Select((_, l) => (IReadOnlyList<HeadChoice>)Enumerable.Range(0, n).Where(i => slots[i].Layer == l)
            .Select(i => options[i][at[i]]).ToList()).ToList();
        return (result, note);
    }

    /// <summary>The layer's record: each head's choice, and the layer-level pattern and mean density / error.</summary>
    public static CalibratedLayer ToLayer(int layer, IReadOnlyList<HeadChoice> heads)
    {
        var cal = heads.Select(h => new CalibratedHead(h.KvHead, h.Pattern, h.Options, h.Density, h.Error)).ToList();
        var top = PerHeadAttention.LayerChoice(cal);
        return new CalibratedLayer(layer, top.Pattern, top.Options, heads.Average(h => h.Density), heads.Average(h => h.Error),
            heads.Select(h => h.Density).ToList(), heads.Select(h => h.Error).ToList(), cal);
    }

    private static string Fmt(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);
}
