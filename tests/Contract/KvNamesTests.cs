using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using LongCtx.Runtime;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;

namespace LongCtx.Tests.Contract;

/// <summary>
/// One list of KV-cache names (<see cref="KvNames"/>): every family round-trips through Format/Parse, no two families
/// claim a name, every name either side accepted before is still accepted, and `lcc inspect` (the architecture card),
/// the compiler's capability analysis and the runtime's decoder contract agree on every family and every fixture.
/// </summary>
[TestFixture]
public sealed class KvNamesTests
{
    private static readonly int[] Layers = [0, 1, 7, 31, 123];

    [Test]
    public void EveryFamily_RoundTrips_AndNoOtherFamilyClaimsItsNames()
    {
        Assert.That(KvNames.Families.Select(f => f.Template), Is.Unique);
        foreach (var f in KvNames.Families)
            foreach (int l in Layers)
                foreach (var part in new[] { KvPart.Key, KvPart.Value })
                {
                    string name = f.Format(l, part);
                    var parsed = KvNames.Parse(name);
                    Assert.That(parsed, Is.Not.Null, $"{f} ({f.Exporter}): '{name}' does not parse");
                    Assert.That(parsed!.Value.Family, Is.SameAs(f), $"'{name}' parsed as {parsed.Value.Family}, written by {f}");
                    // a packed family's one tensor holds both parts: its name has no {part} and parses as the key
                    Assert.That((parsed.Value.Layer, parsed.Value.Part, parsed.Value.ToString()), Is.EqualTo((l, f.Layout == KvLayout.Packed ? KvPart.Key : part, name)));
                    var claimants = KvNames.Families.Where(o => o.Regex.IsMatch(name)).ToList();
                    Assert.That(claimants, Is.EqualTo(new[] { f }), $"'{name}' is claimed by {string.Join(", ", claimants)}");
                }
    }

    // The union of what the runtime (DecoderContract's five past/present regex families + the static cache) and the
    // compiler (ArchitectureCard: past_key_values.N.key, past_key_N, past.N.key, key_cache.N) accepted before.
    [TestCase("past_key_values.3.key", KvRole.Past, 3, KvPart.Key)]
    [TestCase("past_key_values_3_value", KvRole.Past, 3, KvPart.Value)]
    [TestCase("past.3.key", KvRole.Past, 3, KvPart.Key)]
    [TestCase("past_key_3", KvRole.Past, 3, KvPart.Key)]
    [TestCase("past_value_12", KvRole.Past, 12, KvPart.Value)]
    [TestCase("past_key.3", KvRole.Past, 3, KvPart.Key)]
    [TestCase("past_values.3", KvRole.Past, 3, KvPart.Value)]
    [TestCase("key_cache.3", KvRole.Past, 3, KvPart.Key)]
    [TestCase("present.3.value", KvRole.Present, 3, KvPart.Value)]
    [TestCase("present_key_values.3.key", KvRole.Present, 3, KvPart.Key)]
    [TestCase("present_3_key", KvRole.Present, 3, KvPart.Key)]
    [TestCase("present_value_3", KvRole.Present, 3, KvPart.Value)]
    [TestCase("present_keys.3", KvRole.Present, 3, KvPart.Key)]
    [TestCase("present_value.3", KvRole.Present, 3, KvPart.Value)]
    [TestCase("updated_value_cache.3", KvRole.Present, 3, KvPart.Value)]
    [TestCase("past_3", KvRole.Past, 3, KvPart.Key)]
    [TestCase("present_12", KvRole.Present, 12, KvPart.Key)]
    public void NamesAcceptedBefore_StillParse(string name, KvRole role, int layer, KvPart part)
    {
        var n = KvNames.Parse(name);
        Assert.That(n, Is.Not.Null);
        Assert.That((n!.Value.Role, n.Value.Layer, n.Value.Part), Is.EqualTo((role, layer, part)));
        Assert.That(KvNames.Parse(name, role == KvRole.Past ? KvRole.Present : KvRole.Past), Is.Null, "the other role does not claim it");
    }

    [TestCase("input_ids"), TestCase("kv_blob_3"), TestCase("past_key_values.x.key"), TestCase("present.0.query"),
     TestCase("past_key_values.0.key "), TestCase("mypast_key_values.0.key"), TestCase("past_key_values.-1.key"), TestCase("key_cache")]
    public void OtherNames_AreNotKvNames(string name) => Assert.That(KvNames.Parse(name), Is.Null);

    private static IEnumerable<TestCaseData> FamilyPairs()
    {
        var past = KvNames.Families.Where(f => f is { Role: KvRole.Past, Layout: KvLayout.Concat }).ToList();
        var present = KvNames.Families.Where(f => f is { Role: KvRole.Present, Layout: KvLayout.Concat }).ToList();
        Assert.That(past, Has.Count.EqualTo(present.Count));
        for (int i = 0; i < past.Count; i++) yield return new TestCaseData(past[i].Template, present[i].Template).SetName($"Agree({past[i].Template} -> {present[i].Template})");
    }

    /// <summary>A 2-layer model whose caches are named by the given families: inspect, capability analysis and runtime all map it.</summary>
    [TestCaseSource(nameof(FamilyPairs))]
    public void InspectCompilerAndRuntime_AgreeOnEveryFamily(string pastTemplate, string presentTemplate)
    {
        var past = KvNames.Families.Single(f => f.Template == pastTemplate);
        var present = KvNames.Families.Single(f => f.Template == presentTemplate);
        var dir = TestSupport.TempDir("kvnames");
        try
        {
            var path = WriteIdentityCacheModel(dir, past, present, layers: 2);
            var m = OnnxReader.Load(path);
            var card = ArchitectureCard.FromModelIo(m, out var why);
            Assert.That(card, Is.Not.Null, why);
            Assert.That((card!.Layers, card.KvHeads, card.HeadDim), Is.EqualTo((2, 2, 4)), "lcc inspect: the architecture card");

            var (irLayers, problem) = RuntimeCapabilityAnalysis.Layers(m.Graph);
            Assert.That(problem, Is.Null);
            using var session = new InferenceSession(path);
            var contract = DecoderContract.Discover("kvnames", session.InputMetadata, session.OutputMetadata);
            Assert.That(contract.Layers.Select(l => (l.PastKey, l.PastValue, l.PresentKey, l.PresentValue)),
                Is.EqualTo(irLayers.Select(l => (l.PastKey.Name, l.PastValue.Name, l.PresentKey.Name, l.PresentValue.Name))), "runtime vs compiler");
            Assert.That(contract.Layers[1].PastValue, Is.EqualTo(past.Format(1, KvPart.Value)));
            Assert.That(contract.Layers[1].PresentKey, Is.EqualTo(present.Format(1, KvPart.Key)));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>On every shared decoder fixture, inspect's card, the compiler's layer mapping and the runtime contract see the same cache.</summary>
    [TestCaseSource(typeof(TestSupport), nameof(TestSupport.DecoderFixtures))]
    public void InspectCompilerAndRuntime_AgreeOnEachFixture(string fixture)
    {
        var path = TestSupport.Fixture(fixture);
        var m = OnnxReader.Load(path);
        var card = ArchitectureCard.FromModelIo(m, out var why);
        Assert.That(card, Is.Not.Null, why);
        using var session = new InferenceSession(path);
        var contract = DecoderContract.Discover(fixture, session.InputMetadata, session.OutputMetadata);
        Assert.That(card!.Layers, Is.EqualTo(contract.Layers.Count), "layers: inspect vs runtime");
        if (contract.CacheKind == KvCacheKind.Concat)
        {
            Assert.That((card.KvHeads, card.HeadDim), Is.EqualTo((contract.KvHeads, contract.HeadDim)));
            var (irLayers, problem) = RuntimeCapabilityAnalysis.Layers(m.Graph);
            Assert.That(problem, Is.Null);
            Assert.That(contract.Layers.Select(l => (l.PastKey, l.PastValue, l.PresentKey, l.PresentValue)),
                Is.EqualTo(irLayers.Select(l => (l.PastKey.Name, l.PastValue.Name, l.PresentKey.Name, l.PresentValue.Name))));
        }
        else
        {
            Assert.That(card.KvWidth, Is.EqualTo(contract.StaticWidth));
            Assert.That(contract.Layers.All(l => KvNames.Parse(l.PastKey, KvRole.Past)?.Layout == KvLayout.Static
                && KvNames.Parse(l.PresentValue, KvRole.Present)?.Layout == KvLayout.Static));
        }
    }

    /// <summary>input_ids [1, S] -> logits [1, S, 1]; per layer past key/value [1, 2, P, 4] -> Identity -> present.</summary>
    internal static string WriteIdentityCacheModel(string dir, KvNameFamily past, KvNameFamily present, int layers)
    {
        var m = Model.Create("kv-names", 17);
        var r = new Rewriter(m);
        var ids = r.AddInput(m.Graph, IoNames.InputIds, new TensorType(ElementType.Int64, new Shape(1, "s")));
        var kvType = new TensorType(ElementType.Float, new Shape(1, 2, "p", 4));
        for (int l = 0; l < layers; l++)
            foreach (var part in new[] { KvPart.Key, KvPart.Value })
            {
                var p = r.AddInput(m.Graph, past.Format(l, part), kvType);
                var o = r.Op(m.Graph, "Identity", [p], outputName: present.Format(l, part));
                r.SetType(o, kvType);
                r.AddOutput(m.Graph, o);
            }
        var axes = r.AddInitializer(m.Graph, "axes", Tensor.FromInt64s([2], 1));
        var u = r.Op(m.Graph, "Unsqueeze", [ids, axes]);
        var f = r.Op(m.Graph, "Cast", [u], [Attr.Int("to", (long)ElementType.Float)], outputName: IoNames.Logits);
        r.SetType(f, new TensorType(ElementType.Float, new Shape(1, "s", 1)));
        r.AddOutput(m.Graph, f, 0);
        var path = Path.Combine(dir, LongCtxFiles.Model);
        OnnxWriter.Save(m, path, new SaveOptions { AllInline = true });
        return path;
    }
}
