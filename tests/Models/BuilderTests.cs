using NUnit.Framework;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;

namespace LongCtx.Tests.Models;

[TestFixture]
public sealed class BuilderTests
{
    private static readonly long[] Tokens = [5, 17, 3, 99, 42, 7, 64, 1, 120, 33];

    public sealed record Variant(string Form, DecoderConfig Config)
    {
        public override string ToString() => $"{Form} L{Config.Layers} H{Config.Heads}/{Config.KvHeads} D{Config.HeadDim} R{Config.Rotary}{(Config.Interleaved ? " interleaved" : "")} {Config.Dtype}";
        public Model Build() => Builders.Build(Form, Config);
    }

    private static readonly DecoderConfig Base = new();

    public static IEnumerable<Variant> CachedVariants()
    {
        foreach (var form in new[] { "torch", "gqa", "gqa-separate-rope", "gqa-norope", "mha", "opset24" })
        {
            var cfg = form == "mha" ? Base with { KvHeads = Base.Heads } : Base;
            yield return new Variant(form, cfg);
            yield return new Variant(form, cfg with { RotaryDim = 8, Interleaved = true, RopeTheta = 500000, Seed = 7 });
            yield return new Variant(form, cfg with { Dtype = ModelDtype.Float16, Seed = 3 });
        }
        yield return new Variant("torch", Base with { Layers = 3, Heads = 6, KvHeads = 1, HeadDim = 32, Hidden = 96, RotaryDim = 16 });
        yield return new Variant("torch", Base with { KvHeads = 4, Interleaved = true });
        yield return new Variant("gqa", Base with { Heads = 8, KvHeads = 1, HeadDim = 32, RotaryDim = 16 });
    }

    [TestCaseSource(nameof(CachedVariants))]
    public void Builds_deterministically(Variant v)
    {
        var a = OnnxWriter.ToBytes(v.Build());
        var b = OnnxWriter.ToBytes(v.Build());
        Assert.That(a, Is.EqualTo(b), "same config must give identical bytes");
        var c = OnnxWriter.ToBytes(Builders.Build(v.Form, v.Config with { Seed = v.Config.Seed + 1 }));
        Assert.That(c, Is.Not.EqualTo(a), "a different seed must give different weights");
    }

    [TestCaseSource(nameof(CachedVariants))]
    public void Cache_consistent_in_ort(Variant v)
    {
        var bytes = OnnxWriter.ToBytes(v.Build());
        using var h = new DecoderHarness(bytes);
        var (diff, maxAbs, stepDiff) = h.CacheConsistency(Tokens, prefix: 6);
        TestContext.Out.WriteLine($"{v}: prefill-vs-cached max|diff| {diff:E2}, max|logit| {maxAbs:F3}, last-vs-previous {stepDiff:F3}");
        double tol = v.Config.Dtype == ModelDtype.Float16 ? 2e-2 : 1e-4;
        Assert.That(diff, Is.LessThan(tol));
        Assert.That(maxAbs, Is.GreaterThan(0.1), "logits should not be trivially small");
        Assert.That(stepDiff, Is.GreaterThan(10 * tol), "logits must depend on the input");
    }
}
