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
            yield return new Variant(form, cfg with { HeadDim = 32, RotaryDim = 16, Interleaved = true, RopeTheta = 500000, Seed = 7 });
            yield return new Variant(form, cfg with { Dtype = ModelDtype.Float16, Seed = 3 });
        }
        yield return new Variant("torch", Base with { Layers = 3, Heads = 6, KvHeads = 1, HeadDim = 32, Hidden = 96, RotaryDim = 16 });
        yield return new Variant("torch", Base with { KvHeads = 4, Interleaved = true });
        yield return new Variant("torch", Base with { RotaryDim = 8, MaxPositions = 64 });
        yield return new Variant("opset24", Base with { RotaryDim = 8, Interleaved = true });
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
        using var h = new TestDecoder(bytes, threads: 0);
        var (diff, maxAbs, stepDiff) = h.CacheConsistency(Tokens, prefix: 6);
        TestContext.Out.WriteLine($"{v}: prefill-vs-cached max|diff| {diff:E2}, max|logit| {maxAbs:F3}, last-vs-previous {stepDiff:F3}");
        double tol = v.Config.Dtype == ModelDtype.Float16 ? 2e-2 : 1e-4;
        Assert.That(diff, Is.LessThan(tol));
        Assert.That(maxAbs, Is.GreaterThan(0.1), "logits should not be trivially small");
        Assert.That(stepDiff, Is.GreaterThan(10 * tol), "logits must depend on the input");
    }

    public static IEnumerable<DecoderConfig> SharedConfigs()
    {
        yield return Base with { KvHeads = Base.Heads };
        yield return Base with { KvHeads = Base.Heads, HeadDim = 32, RotaryDim = 16, Interleaved = true, RopeTheta = 500000, Seed = 9 };
        yield return Base with { KvHeads = Base.Heads, HeadDim = 32, RotaryDim = 16, Seed = 11, Layers = 1 };
    }

    /// <summary>
    /// All forms draw the same weights from the same config, so they must compute the same function. This pins the RoPE
    /// conventions (half-split vs interleaved, partial rotary, cos/sin caches vs inv_freq) of every form to the torch form.
    /// </summary>
    [TestCaseSource(nameof(SharedConfigs))]
    public void All_forms_compute_the_same_function(DecoderConfig c)
    {
        float[] Logits(string form, out float[] decode)
        {
            using var h = new TestDecoder(OnnxWriter.ToBytes(Builders.Build(form, c)), threads: 0);
            var full = h.Step(Tokens)[h.Contract.Logits].Data;
            h.Reset();
            h.Step(Tokens[..^1]);
            decode = h.Step(Tokens[^1..])[h.Contract.Logits].Data;
            return full;
        }
        var want = Logits("torch", out var wantDecode);
        foreach (var form in new[] { "gqa", "gqa-separate-rope", "mha", "opset24" })
        {
            var got = Logits(form, out var gotDecode);
            double d = TestDecoder.MaxDiff(want, got), dd = TestDecoder.MaxDiff(wantDecode, gotDecode);
            TestContext.Out.WriteLine($"{form}: prefill max|diff| vs torch {d:E2}, decode {dd:E2}");
            Assert.That(d, Is.LessThan(1e-4), $"{form} prefill logits differ from the torch form");
            Assert.That(dd, Is.LessThan(1e-4), $"{form} decode logits differ from the torch form");
        }
        var noRope = Logits("gqa-norope", out _);
        Assert.That(TestDecoder.MaxDiff(want, noRope), Is.GreaterThan(1e-2), "dropping RoPE must change the logits");
    }

    [Test]
    public void Mha_rejects_grouped_kv() =>
        Assert.That(() => GenaiMhaDecoder.Build(Base), Throws.ArgumentException.With.Message.Contains("kv heads == heads"));

    [Test]
    public void Gqa_fused_rope_rejects_unsupported_rotary_dim() =>
        Assert.That(() => GqaDecoder.Build(Base with { RotaryDim = 8 }), Throws.ArgumentException.With.Message.Contains("multiple of 8"));

    [Test]
    public void Every_registered_form_builds_and_verifies()
    {
        foreach (var form in Builders.Forms)
        {
            var cfg = form == "mha" ? Base with { KvHeads = Base.Heads } : Base;
            var m = Builders.Build(form, cfg);
            Assert.That(m.Graph.Nodes.Count, Is.GreaterThan(10), form);
            Assert.DoesNotThrow(() => LongCtx.Compiler.IR.Verifier.Verify(OnnxReader.FromBytes(OnnxWriter.ToBytes(m))), form);
        }
        Assert.That(() => Builders.Build("nope", Base), Throws.ArgumentException.With.Message.Contains("unknown decoder form"));
    }
}
