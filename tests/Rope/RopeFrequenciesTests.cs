using NUnit.Framework;
using System.Text.Json;
using LongCtx.Passes.Rope;

namespace LongCtx.Tests.Rope;

/// <summary>The C# reference tables against the PyTorch reference in recall-public/baseline.json, and the identities of the others.</summary>
[TestFixture]
public sealed class RopeFrequenciesTests
{
    private const double Rel = 1e-6;

    private static RopeTables Compute(string method, double s) => method switch
    {
        "plain" => RopeTables.Of("plain", s, RopeFrequencies.Plain(10000, 32)),
        "linear" => RopeFrequencies.Linear(10000, 32, s),
        "ntk" => RopeFrequencies.Ntk(10000, 32, s),
        "yarn" => RopeFrequencies.Yarn(10000, 32, s, 256),
        _ => throw new ArgumentException(method),
    };

    [TestCase("plain"), TestCase("linear"), TestCase("ntk"), TestCase("yarn")]
    public void MatchesPyTorchBaseline(string method)
    {
        var b = RopeFixture.Baseline();
        Assert.That(b.GetProperty("rope_theta").GetDouble(), Is.EqualTo(10000));
        Assert.That(b.GetProperty("head_dim").GetInt32(), Is.EqualTo(32));
        int checkedLengths = 0;
        foreach (var len in b.GetProperty("rope").GetProperty(method).EnumerateObject())
        {
            var e = len.Value;
            double s = e.GetProperty("s").GetDouble();
            // baseline's rule: no scaling at or below the trained length
            var t = Compute(method, Math.Max(1, s));
            var want = e.GetProperty("inv_freq").EnumerateArray().Select(x => x.GetDouble()).ToArray();
            Assert.That(t.InvFreq, Has.Length.EqualTo(want.Length));
            for (int i = 0; i < want.Length; i++)
                Assert.That(t.InvFreq[i], Is.EqualTo(want[i]).Within(Rel * Math.Abs(want[i]) + 1e-12), $"{method} L={len.Name} inv_freq[{i}]");
            Assert.That(t.CosSinMultiplier, Is.EqualTo(e.GetProperty("cos_sin_multiplier").GetDouble()).Within(1e-12), $"{method} L={len.Name} multiplier");
            if (e.TryGetProperty("base_scaled", out var bs)) Assert.That(t.Extra["base_scaled"], Is.EqualTo(bs.GetDouble()).Within(1e-9 * bs.GetDouble()));
            if (e.TryGetProperty("yarn_low", out var lo))
            {
                Assert.That(t.Extra["yarn_low"], Is.EqualTo(lo.GetDouble()));
                Assert.That(t.Extra["yarn_high"], Is.EqualTo(e.GetProperty("yarn_high").GetDouble()));
            }
            checkedLengths++;
        }
        Assert.That(checkedLengths, Is.EqualTo(5));
    }

    [Test]
    public void DynamicNtkEqualsNtkAtTheCurrentLengthAndPlainBelowTrained()
    {
        foreach (var s in new[] { 2.0, 4.0, 16.0 })
            Assert.That(RopeFrequencies.DynamicNtk(10000, 32, 256 * s, 256).InvFreq, Is.EqualTo(RopeFrequencies.Ntk(10000, 32, s).InvFreq).Within(1e-15));
        Assert.That(RopeFrequencies.DynamicNtk(10000, 32, 100, 256).InvFreq, Is.EqualTo(RopeFrequencies.Plain(10000, 32)));
    }

    [Test]
    public void Llama3KeepsHighFrequenciesDividesLowOnesAndBlends()
    {
        // Llama 3.1 8B setting: theta 500000, d 128, factor 8, low 1, high 4, original 8192.
        var plain = RopeFrequencies.Plain(500000, 128);
        var t = RopeFrequencies.Llama3(500000, 128, 8, 8192, 1, 4);
        for (int i = 0; i < plain.Length; i++)
        {
            double wl = 2 * Math.PI / plain[i];
            if (wl < 8192 / 4.0) Assert.That(t.InvFreq[i], Is.EqualTo(plain[i]));
            else if (wl > 8192) Assert.That(t.InvFreq[i], Is.EqualTo(plain[i] / 8).Within(1e-18));
            else
            {
                Assert.That(t.InvFreq[i], Is.InRange(plain[i] / 8, plain[i]));
                double smooth = (8192 / wl - 1) / 3;
                Assert.That(t.InvFreq[i], Is.EqualTo((1 - smooth) * plain[i] / 8 + smooth * plain[i]).Within(1e-15));
            }
        }
        Assert.That(RopeFrequencies.Llama3(10000, 32, 1, 256).InvFreq, Is.EqualTo(RopeFrequencies.Plain(10000, 32)).Within(1e-16));
    }

    [Test]
    public void LongRopeDividesByFactorsAndScalesMagnitude()
    {
        var f = Enumerable.Range(0, 16).Select(i => 1.0 + i / 4.0).ToArray();
        var t = RopeFrequencies.LongRope(10000, 32, f, 4096, 256);
        var plain = RopeFrequencies.Plain(10000, 32);
        for (int i = 0; i < 16; i++) Assert.That(t.InvFreq[i], Is.EqualTo(plain[i] / f[i]).Within(1e-16));
        Assert.That(t.CosSinMultiplier, Is.EqualTo(Math.Sqrt(1 + Math.Log(16) / Math.Log(256))).Within(1e-15));
        Assert.That(RopeFrequencies.LongRope(10000, 32, Enumerable.Repeat(1.0, 16).ToArray(), 256, 256).CosSinMultiplier, Is.EqualTo(1.0));
        var ex = Assert.Throws<ArgumentException>(() => RopeFrequencies.LongRope(10000, 32, new double[15], 4096, 256));
        Assert.That(ex!.Message, Does.Contain("15 entries").And.Contain("16"));
    }

    [Test]
    public void GiraffeTruncateAndPower()
    {
        var plain = RopeFrequencies.Plain(10000, 32);
        var t = RopeFrequencies.GiraffeTruncate(10000, 32, 256);
        double b = 2 * Math.PI / 256, rho = 2 * Math.PI / (256 * 16);
        for (int i = 0; i < 16; i++)
            Assert.That(t.InvFreq[i], Is.EqualTo(plain[i] >= b ? plain[i] : plain[i] >= b / 8 ? rho : 0.0), $"pair {i}");
        Assert.That(t.InvFreq.Count(x => x == 0), Is.GreaterThan(0), "some lowest frequencies are truncated to 0");
        Assert.That(t.InvFreq.Count(x => x == rho), Is.GreaterThan(0), "some middle frequencies are set to rho");
        Assert.That(RopeFrequencies.GiraffeTruncate(10000, 32, 0).InvFreq, Is.EqualTo(plain));

        var p = RopeFrequencies.GiraffePower(10000, 32, 2);
        for (int i = 0; i < 16; i++) Assert.That(p.InvFreq[i], Is.EqualTo(plain[i] * Math.Pow(1 - i / 16.0, 2)).Within(1e-18));
        Assert.That(RopeFrequencies.GiraffePower(10000, 32, 0).InvFreq, Is.EqualTo(plain));
    }
}
