using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Analysis.Rope;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes.Rope;
using NUnit.Framework;

namespace LongCtx.Tests.Rope;

/// <summary>
/// The one RoPE analysis: attention discovery, the RoPE locator of the scaling passes and the architecture card all
/// recover the same theta, rotary dim and interleaving, on every builder variant, the tiny IR models and the shared
/// fixtures; and the rounding rule is one rule.
/// </summary>
[TestFixture]
public sealed class RopeAnalysisTests
{
    private static readonly DecoderConfig Base = new(Layers: 2);

    public sealed record Variant(string Form, DecoderConfig Config)
    {
        public override string ToString() => $"{Form} R{Config.Rotary}{(Config.Interleaved ? " interleaved" : "")} theta {Config.RopeTheta} {Config.Dtype}";
    }

    public static IEnumerable<Variant> Variants()
    {
        foreach (var form in new[] { "torch", "gqa", "gqa-separate-rope", "mha", "opset24" })
        {
            var b = form == "mha" ? Base with { KvHeads = Base.Heads } : Base; // MultiHeadAttention: kv heads == heads
            yield return new(form, b);
            yield return new(form, b with { HeadDim = 32, RotaryDim = 16, Interleaved = true, RopeTheta = 500000, Seed = 7 });
            yield return new(form, b with { Dtype = ModelDtype.Float16, RopeTheta = 1e6, Seed = 3 });
            yield return new(form, b with { HeadDim = 32, Dtype = ModelDtype.Float16, RopeTheta = 500000, MaxPositions = 2048, Seed = 4 });
        }
    }

    [TestCaseSource(nameof(Variants))]
    public void DiscoveryLocatorAndCardAgreeOnEveryBuilderVariant(Variant v)
    {
        var m = Builders.Build(v.Form, v.Config);
        var c = v.Config;
        var blocks = AttentionDiscovery.Discover(m).Blocks;
        Assert.That(blocks, Has.Count.EqualTo(c.Layers));
        foreach (var b in blocks)
            Assert.That((b.Rope.Present, b.Rope.Theta, b.Rope.RotaryDim, b.Rope.Interleaved), Is.EqualTo((true, (double?)c.RopeTheta, c.Rotary, c.Interleaved)), b.Rope.ToString());

        var sites = RopeLocator.Find(m).Sites;
        Assert.That(sites, Is.Not.Empty);
        foreach (var s in sites) Assert.That((s.Theta, s.RotaryDim), Is.EqualTo((c.RopeTheta, c.Rotary)), s.Where);

        var card = ArchitectureCard.FromModelIo(m, out var why);
        Assert.That(card, Is.Not.Null, why);
        Assert.That((card!.RopeTheta, card.RotaryDim), Is.EqualTo(((double?)c.RopeTheta, (int?)c.Rotary)), string.Join("; ", card.Sources));
        var fromBlocks = ArchitectureCard.FromBlocks(m, blocks, out why);
        Assert.That((fromBlocks!.RopeTheta, fromBlocks.RotaryDim), Is.EqualTo(((double?)c.RopeTheta, (int?)c.Rotary)), why);
    }

    [Test]
    public void TinyRopeModelsGiveTheSameSites()
    {
        foreach (var (name, m) in new[] { ("torch", TinyRope.TorchForm()), ("torch fp16", TinyRope.TorchFormFp16()), ("cache", TinyRope.CacheForm()) })
        {
            var site = RopeLocator.Find(m).Sites.Single();
            Assert.That((site.Theta, site.RotaryDim), Is.EqualTo(((double)TinyRope.Theta, TinyRope.Dim)), name);
        }
        Assert.That(RopeLocator.Find(TinyRope.NoRope()).Sites, Is.Empty);
    }

    [Test]
    public void SharedFixtures()
    {
        var recall = OnnxReader.Load(TestSupport.Fixture("recall-public/model.onnx"));
        foreach (var b in AttentionDiscovery.Discover(recall).Blocks)
            Assert.That((b.Rope.Theta, b.Rope.RotaryDim, b.Rope.Interleaved, b.Rope.Source), Is.EqualTo(((double?)10000, 32, false, "inv_freq")));
        Assert.That(RopeLocator.Find(recall).Sites.Select(s => (s.Theta, s.RotaryDim)), Is.EqualTo(new[] { (10000.0, 32) }));
        Assert.That(ArchitectureCard.FromModelIo(recall, out _)!.RopeTheta, Is.EqualTo(10000));

        var llama = OnnxReader.Load(TestSupport.Fixture("genai/llama-mha-rotary-fp16/model.onnx"));
        foreach (var b in AttentionDiscovery.Discover(llama).Blocks)
            Assert.That((b.Rope.Theta, b.Rope.RotaryDim, b.Rope.Interleaved, b.Rope.Source), Is.EqualTo(((double?)10000, 16, false, "cos_cache")),
                "fp16 caches: the phase fit over all rows snaps to the round base");
        Assert.That(RopeLocator.Find(llama).Sites.Select(s => (s.Theta, s.RotaryDim)).Distinct(), Is.EqualTo(new[] { (10000.0, 16) }));
    }

    /// <summary>A base that is not a round number: every consumer reports the same 6-significant-digit value.</summary>
    [TestCase("torch"), TestCase("gqa"), TestCase("mha"), TestCase("opset24")]
    public void NonRoundBaseIsRoundedOneWayEverywhere(string form)
    {
        var c = Base with { RopeTheta = 31415.9265, MaxPositions = 512, KvHeads = form == "mha" ? Base.Heads : Base.KvHeads };
        var m = Builders.Build(form, c);
        var thetas = AttentionDiscovery.Discover(m).Blocks.Select(b => b.Rope.Theta!.Value)
            .Concat(RopeLocator.Find(m).Sites.Select(s => s.Theta))
            .Append(ArchitectureCard.FromModelIo(m, out _)!.RopeTheta!.Value).Distinct().ToList();
        Assert.That(thetas, Has.Count.EqualTo(1), string.Join(", ", thetas));
        Assert.That(thetas[0], Is.EqualTo(RopeAnalysis.RoundSignificant(thetas[0], 6)), "6 significant digits");
        Assert.That(thetas[0], Is.EqualTo(c.RopeTheta).Within(c.RopeTheta * (form == "torch" ? 1e-6 : 1e-4)));
    }

    [Test]
    public void RoundingRule()
    {
        var p = RopePrecision.InvFreqFloat32;
        Assert.That(RopeAnalysis.RoundTheta(10000.05, p), Is.EqualTo(10000), "within 1e-5 of a 2-digit value: snapped");
        Assert.That(RopeAnalysis.RoundTheta(10000.5, p), Is.EqualTo(10000.5), "outside: 6 significant digits");
        Assert.That(RopeAnalysis.RoundTheta(10000.5, RopePrecision.CacheFloat16), Is.EqualTo(10000), "the fp16 cache tolerance (2e-3) snaps it");
        Assert.That(RopeAnalysis.RoundTheta(123456.789, p), Is.EqualTo(123457));
        Assert.That(RopeAnalysis.RoundTheta(25000.1, p), Is.EqualTo(25000), "2.5e4 is a 2-digit value");
        Assert.That(RopePrecision.Of(ElementType.Float16, fromCache: false), Is.SameAs(RopePrecision.InvFreqFloat16));
        Assert.That(RopePrecision.Of(ElementType.Float, fromCache: true), Is.SameAs(RopePrecision.CacheFloat32));
    }

    [Test]
    public void FitChecksThePlainFormAndIgnoresAUniformScale()
    {
        var plain = RopeFrequencies.Plain(500000, 64);
        var fit = RopeAnalysis.Fit(plain, RopePrecision.InvFreqFloat32);
        Assert.That((fit.Theta, fit.RotaryDim, fit.IsPlain), Is.EqualTo(((double?)500000, 64, true)));

        var interpolated = RopeAnalysis.Fit(plain.Select(f => f / 4).ToArray(), RopePrecision.InvFreqFloat32);
        Assert.That(interpolated.Theta, Is.EqualTo(500000), "anchored at the first frequency: position interpolation keeps the base");
        Assert.That(interpolated.IsPlain, Is.False);
        Assert.That(interpolated.Mismatch, Does.Contain("first frequency"));

        var yarn = RopeAnalysis.Fit(RopeFrequencies.Yarn(10000, 32, 8, 256).InvFreq, RopePrecision.InvFreqFloat32);
        Assert.That(yarn.Mismatch, Does.Contain("predicts"), "a ramped table is not plain RoPE");
        Assert.That(RopeAnalysis.Fit([1.0], RopePrecision.InvFreqFloat32).Theta, Is.Null);
    }

    [Test]
    public void CacheFrequenciesReadEveryLayout()
    {
        var f = RopeFrequencies.Plain(10000, 16);
        const int rows = 64;
        int h = f.Length;
        var cos = new float[rows * h]; var sin = new float[rows * h];
        var dup = new float[rows * 2 * h]; var rep = new float[rows * 2 * h];
        for (int p = 0; p < rows; p++)
            for (int i = 0; i < h; i++)
            {
                cos[p * h + i] = (float)Math.Cos(p * f[i]); sin[p * h + i] = (float)Math.Sin(p * f[i]);
                dup[p * 2 * h + i] = dup[p * 2 * h + h + i] = cos[p * h + i];
                rep[p * 2 * h + 2 * i] = rep[p * 2 * h + 2 * i + 1] = cos[p * h + i];
            }
        var half = RopeAnalysis.CacheFrequencies(Tensor.FromFloats(cos, rows, h), Tensor.FromFloats(sin, rows, h), CacheLayout.Half)!;
        var d = RopeAnalysis.CacheFrequencies(Tensor.FromFloats(dup, rows, 2 * h), null, CacheLayout.Duplicated)!;
        var r = RopeAnalysis.CacheFrequencies(Tensor.FromFloats(rep, rows, 2 * h), null, CacheLayout.RepeatInterleaved)!;
        for (int i = 0; i < h; i++)
        {
            Assert.That(half[i], Is.EqualTo(f[i]).Within(1e-6 * f[i] + 1e-9), $"phase fit, pair {i}");
            // cos alone: acos of a float32 cos near 1 is coarse for small angles (why caches are read with sin when there is one)
            if (f[i] > 1e-2) Assert.That(d[i], Is.EqualTo(f[i]).Within(1e-4 * f[i]), $"acos, duplicated, pair {i}");
            Assert.That(r[i], Is.EqualTo(d[i]), $"acos, repeat-interleaved, pair {i}");
        }
        var info = RopeAnalysis.FromCache(Tensor.FromHalves(cos.Select(x => (Half)x).ToArray(), rows, h), Tensor.FromHalves(sin.Select(x => (Half)x).ToArray(), rows, h), CacheLayout.Half, true);
        Assert.That((info.Theta, info.RotaryDim, info.Interleaved, info.OriginalMaxPositions), Is.EqualTo(((double?)10000, 16, true, (int?)rows)));
    }
}
