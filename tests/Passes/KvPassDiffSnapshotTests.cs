using LongCtx.Compiler.Diff;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Tests.Foundation;
using NUnit.Framework;
using Snapshooter;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Passes;

/// <summary>
/// The <c>lcc diff</c> of each KV-cache pass that needs no calibration (kivi-kv; kv-evict for snapkv, adakv, lemo) against
/// the same builder decoder compiled with the default pipeline: what each option adds to the graph, held by a snapshot.
/// (quantize-kv and hadamard-kv calibrate their scales by running ORT, whose float results can differ by ISA, so their
/// content hashes are not snapshot material; their graphs are checked by KvQuantCompileTests.)
/// </summary>
[TestFixture]
public sealed class KvPassDiffSnapshotTests
{
    private static readonly DecoderConfig Config = new(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 96, MaxPositions: 128);

    private string _dir = "";
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("kv-diff");
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private string Compile(string src, string name, params string[] args)
    {
        var outDir = Path.Combine(_dir, name);
        var r = CliRunner.Run(["compile", src, "-o", outDir, .. args]);
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
        return Path.Combine(outDir, "model.onnx");
    }

    private static readonly Dictionary<string, string> Options = new()
    {
        ["kivi4-group16"] = "--kv kivi4 --kv-group 16",
        ["kivi2-group8"] = "--kv kivi2 --kv-group 8 --kv-residual 16",
        ["snapkv"] = "--kv-evict snapkv:budget=20%",
        ["adakv"] = "--kv-evict adakv:budget=20%",
        ["lemo"] = "--kv-evict lemo:budget=64",
    };

    private static IEnumerable<string> Names => Options.Keys;

    [TestCaseSource(nameof(Names))]
    public void Diff_AgainstTheDefaultPipeline(string name)
    {
        var srcDir = Path.Combine(_dir, "src");
        Directory.CreateDirectory(srcDir);
        var src = Path.Combine(srcDir, "model.onnx");
        OnnxWriter.Save(Builders.Build("torch", Config), src, new SaveOptions { AllInline = true });
        var before = OnnxReader.Load(Compile(src, "base"));
        var after = OnnxReader.Load(Compile(src, name, Options[name].Split(' ')));
        var text = ModelDiff.Compare(before, after).ToText();
        Assert.That(text, Does.Contain("+"), "the option changes the graph");
        Snapshot.Match(text, SnapshotNameExtension.Create(name));
    }
}
