using LongCtx.Contract;
using LongCtx.Runtime;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// --kv-evict actqkv (issue 12 item 4; ActQKV, arXiv:2502.13542): the activation-bias probe on hand-made rows, the
/// per-layer mass cut-off, compaction keeping exactly the selected rows on recall-public, a budget at least the prompt ==
/// the full cache, and lcc inspect (bad options: KvEvictionTests.BadSpec_IsOneLineError).
/// </summary>
[TestFixture]
public sealed class ActQkvTests : RecallCompileFixture
{
    private const int Window = 8;
    private const string Spec = "actqkv:budget=24,window=8,mass=0.5";

    private static KvEvictLayer Layer(int heads, int dim, IReadOnlyList<double>? invFreq = null, double factor = 1) =>
        new(0, "q", "k", heads, heads, dim, 1, invFreq is null ? 0 : 2 * invFreq.Count, false, invFreq, factor);

    /// <summary>Rows that deviate from the window's mean on an outlier channel get the weight: the probe is pulled to them.</summary>
    [Test]
    public void Probe_WeightsTheOutlierHeavyRow()
    {
        // one head, 4 channels, 5 rows: row 3 has a large outlier in channel 2, the others differ slightly
        var rows = new List<float[]>
        {
            new[] { 1f, 0.1f, 0.0f, 1f }, new[] { 1.1f, 0.0f, 0.1f, 0.9f }, new[] { 0.9f, 0.1f, 0.0f, 1.1f },
            new[] { 1f, 0.05f, 8.0f, 1f }, new[] { 1.0f, 0.0f, 0.05f, 1.0f },
        };
        var w = ActQkv.Weights(rows, 0, 4);
        Assert.That(w.Sum(), Is.EqualTo(1).Within(1e-9));
        Assert.That(Array.IndexOf(w, w.Max()), Is.EqualTo(3), string.Join(", ", w));
        Assert.That(w[3], Is.GreaterThan(1.5 / 5), "well above a uniform share");
        var (probe, at) = ActQkv.Probe(rows, [10, 11, 12, 13, 14], Layer(1, 4));
        Assert.That(at, Is.EqualTo(14));
        double mean2 = rows.Average(r => r[2]);
        Assert.That(probe[2], Is.GreaterThan(mean2 * 1.2), "the probe leans to the outlier row, more than the plain mean");
        // identical rows: no bias anywhere, uniform weights, probe == the row
        var same = Enumerable.Repeat(new[] { 0.5f, -1f, 2f, 0f }, 3).ToList();
        Assert.That(ActQkv.Weights(same, 0, 4), Is.All.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(ActQkv.Probe(same, [0, 1, 2], Layer(1, 4)).Probe, Is.EqualTo(same[0]).Within(1e-6));
    }

    /// <summary>Rows that are one vector rotated to their own positions give that vector as the probe at the last position (RoPE magnitude divided out once).</summary>
    [Test]
    public void Probe_RotatesEachRowFromItsOwnPosition()
    {
        var layer = Layer(2, 4, [0.3, 0.01], factor: 1.5);
        float[] v = [0.7f, -0.2f, 1.1f, 0.4f, -0.5f, 0.9f, 0.3f, 0.2f];
        int[] positions = [3, 6, 7, 11];
        var rows = positions.Select(p =>
        {
            var x = (float[])v.Clone();
            for (int h = 0; h < 2; h++) KeyScorer.RotateQuery(x.AsSpan(h * 4, 4), 11 - p, layer);
            return x.Select(f => f / 1.5f).ToArray(); // R(P - p) v, unit magnitude
        }).ToList();
        var (probe, at) = ActQkv.Probe(rows, positions, layer);
        Assert.That(at, Is.EqualTo(11));
        Assert.That(probe, Is.EqualTo(v).Within(1e-5));
    }

    /// <summary>
    /// Retrieval weighs each window row's attention by its activation bias: the scores == Σ_i w_i softmax(q_i · K) per
    /// query head, here one query head per KV head.
    /// </summary>
    [Test]
    public void RowWeights_WeighEachRowsAttention()
    {
        var layer = Layer(2, 4, [0.3, 0.01]);
        var rnd = new Random(7);
        var rows = Enumerable.Range(0, 5).Select(_ => Enumerable.Range(0, 8).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray()).ToList();
        rows[3][2] = 6f; // head 0's outlier row
        int[] positions = [10, 11, 12, 13, 14];
        var w = ActQkv.RowWeights(rows, positions, layer);
        Assert.That(w, Has.Length.EqualTo(5));
        for (int h = 0; h < 2; h++) Assert.That(w.Sum(r => r[h]), Is.EqualTo(1).Within(1e-9), $"head {h}");
        Assert.That(Enumerable.Range(0, 5).MaxBy(i => w[i][0]), Is.EqualTo(3), "head 0: the outlier row weighs most");
        const int keys = 16;
        var cache = Enumerable.Range(0, 2 * keys * 4).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray(); // [2 kv heads][16][4]
        var got = new[] { new float[keys], new float[keys] };
        KeyScorer.Accumulate(rows, positions, cache, keys, keys, layer, got, rowWeights: w);
        var want = new[] { new double[keys], new double[keys] };
        for (int i = 0; i < 5; i++)
        {
            var one = new[] { new float[keys], new float[keys] }; // one row, unweighted; query head h -> KV head h (no grouping here)
            KeyScorer.Accumulate([rows[i]], [positions[i]], cache, keys, keys, layer, one);
            for (int h = 0; h < 2; h++) for (int j = 0; j < keys; j++) want[h][j] += w[i][h] * one[h][j];
        }
        for (int g = 0; g < 2; g++) Assert.That(got[g].Select(x => (double)x), Is.EqualTo(want[g]).Within(1e-5), $"kv head {g}");
    }

    /// <summary>A peaked score distribution reaches the mass with fewer keys than a flat one; the budget bounds both; the window is kept.</summary>
    [Test]
    public void CutOff_KeepsFewerKeysWhenPeaked_BoundedByBudget()
    {
        const int n = 40, window = 4;
        float[] peaked = [.. Enumerable.Range(0, n).Select(j => j is 5 or 17 ? 10f : 0.05f)];
        float[] flat = [.. Enumerable.Range(0, n).Select(j => 1f + 0.01f * (j % 3))];
        var p = ActQkv.CutOff([peaked], n, window, 30, 0.8);
        var f = ActQkv.CutOff([flat], n, window, 30, 0.8);
        Assert.That(p[0], Is.EqualTo(new[] { 5, 17, 36, 37, 38, 39 }), "two keys carry 80% of the peaked mass");
        Assert.That(f[0].Length, Is.EqualTo(30), "the flat layer would need 29 of 36 keys: the budget (30 - window) bounds it");
        Assert.That(f[0][^window..], Is.EqualTo(new[] { 36, 37, 38, 39 }));
        Assert.That(ActQkv.KeysForMass(flat.AsSpan(0, n - window), 0.8), Is.EqualTo(29));
        // one count per layer: the head needing more decides; budget >= length keeps everything
        var both = ActQkv.CutOff([peaked, flat], n, window, 20, 0.8);
        Assert.That(both.Select(r => r.Length), Is.All.EqualTo(20));
        Assert.That(both[0], Does.Contain(5).And.Contain(17));
        Assert.That(ActQkv.CutOff([peaked], n, window, n, 0.8)[0], Is.EqualTo(Enumerable.Range(0, n)));
    }

    [Test]
    public void Pass_RecordsMassAndPerLayerSeqlens_InspectShowsIt()
    {
        var dir = Compile("actqkv", Spec);
        var manifest = LongCtxManifest.TryReadFolder(dir)!;
        var pass = manifest.Pipeline.Single(p => p.Pass == "kv-evict");
        Assert.That(pass.Counts["attention queries exposed"], Is.EqualTo(4));
        Assert.That(pass.Counts["per-layer seqlens_k inputs"], Is.EqualTo(4), "layers keep different lengths");
        var policy = KvEvictPolicy.From(manifest.Runtime, "test")!;
        Assert.That((policy.Method, policy.Budget, policy.Window, policy.Mass), Is.EqualTo(("actqkv", 24.0, Window, 0.5)));
        Assert.That(policy.Layers.All(l => l.Seqlens is not null));
        var inspect = Foundation.CliRunner.Run("inspect", dir);
        Assert.That(inspect.Stdout, Does.Contain("kv eviction: actqkv budget=24 window=8 mass=0.5"));
    }

    /// <summary>Compaction keeps exactly each layer's cut-off of the probe's scores (its own length per layer), and decoding goes on.</summary>
    [Test]
    public void EndOfPrompt_KeepsExactlyTheCutOffRows()
    {
        const int n = 64;
        using var m = LongCtxModel.Load(Compile("actqkv", Spec), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(Prompt(n));
        int cap = (int)cache.OutputBuffers![0].GetTensorTypeAndShape().Shape[2];
        var values = cache.OutputBuffers.Where((_, i) => i % 2 == 1).Select(b => b.GetTensorDataAsSpan<float>().ToArray()).ToList();
        var expected = Enumerable.Range(0, 4).Select(l => ActQkv.CutOff(cache.ProbeScores(l), n, Window, 24, 0.5)).ToList();
        cache.EndOfPrompt();
        Assert.That(cache.LayerLengths, Is.EqualTo(expected.Select(e => e[0].Length)));
        Assert.That(cache.LayerLengths, Is.All.InRange(Window, 24));
        for (int l = 0; l < 4; l++)
        {
            var now = cache.OutputBuffers[2 * l + 1].GetTensorDataAsSpan<float>();
            for (int h = 0; h < 2; h++)
                for (int r = 0; r < expected[l][h].Length; r++)
                    Assert.That(now.Slice((h * cap + r) * 32, 32).ToArray(), Is.EqualTo(values[l].AsSpan((h * cap + expected[l][h][r]) * 32, 32).ToArray()), $"layer {l} head {h} row {r}");
        }
        var logits = g.Forward([1]);
        Assert.That(logits.All(float.IsFinite));
        Assert.That(cache.LayerLengths, Is.EqualTo(expected.Select(e => e[0].Length + 1)));
        Assert.That(cache.NextPosition, Is.EqualTo(n + 1));
    }

    /// <summary>A budget at least the prompt evicts nothing even with a low mass (the budget decides first): logits == the full cache.</summary>
    [Test]
    public void BudgetAtLeastPrompt_EqualsFullCache_SaidOnce() => AssertNoOpBudgetEqualsFullCache("big", "actqkv:budget=4096,mass=0.1");
}
