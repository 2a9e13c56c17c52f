using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using NUnit.Framework;
using Snapshooter.NUnit;

namespace LongCtx.Tests.CostModel;

[TestFixture]
public sealed class CostModelTests
{
    private static string RecallPath() => Path.Combine(TestSupport.SharedModels, "recall-public", "model.onnx");

    [TestCase("24GiB", 24L << 30)]
    [TestCase("24 GiB", 24L << 30)]
    [TestCase("24gib", 24L << 30)]
    [TestCase("1.5GB", 1_500_000_000L)]
    [TestCase("512MiB", 512L << 20)]
    [TestCase("4096", 4096L)]
    [TestCase("2TB", 2_000_000_000_000L)]
    public void Parses_sizes(string text, long bytes) => Assert.That(Units.ParseBytes(text), Is.EqualTo(bytes));

    [TestCase("50GB/s", 50e9)]
    [TestCase("1.5 TB/s", 1.5e12)]
    [TestCase("800MiB/s", 800.0 * (1 << 20))]
    public void Parses_bandwidths(string text, double bps) => Assert.That(Units.ParseBandwidth(text), Is.EqualTo(bps));

    [TestCase("4k", 4096L)]
    [TestCase("32k", 32768L)]
    [TestCase("128K", 131072L)]
    [TestCase("1M", 1048576L)]
    [TestCase("1000", 1000L)]
    public void Parses_token_counts(string text, long tokens) => Assert.That(Units.ParseTokens(text), Is.EqualTo(tokens));

    [TestCase("24GX", "unknown unit 'GX'")]
    [TestCase("lots", "cannot read 'lots'")]
    [TestCase("-3GB", "cannot read")]
    public void Rejects_bad_sizes(string text, string message) =>
        Assert.That(() => Units.ParseBytes(text, "--memory"), Throws.ArgumentException.With.Message.StartsWith("--memory: ").And.Message.Contains(message));

    [Test]
    public void Rejects_bad_bandwidth_and_context()
    {
        Assert.That(() => Units.ParseBandwidth("50GB", "--bandwidth"), Throws.ArgumentException.With.Message.Contains("not a bandwidth"));
        Assert.That(() => Units.ParseBandwidth("50GB/h", "--bandwidth"), Throws.ArgumentException.With.Message.Contains("not a bandwidth"));
        Assert.That(() => Units.ParseTokens("32q", "--context"), Throws.ArgumentException.With.Message.Contains("unknown unit 'q'"));
        Assert.That(() => Units.ParseTokens("0", "--context"), Throws.ArgumentException.With.Message.Contains("at least one token"));
    }

    /// <summary>
    /// Worked example, recall-public (4 layers, 2 kv heads, head_dim 32, 4 heads, 853,120 float32 params of which 32,768
    /// embedding): KV/token fp16 = 2*4*2*32*2 = 1024 B; fp32 2048, int8 512, int4 256. At 32k: fp32 2048*32768 = 64 MiB.
    /// 24 GiB: floor((25,769,803,776 - 3,412,480) / 67,108,864) = 383 fp32 sequences. Prefill: 2*(853,120-32,768)*32,768 =
    /// 53,762,588,672 + 2*4*4*32*32,768^2 = 1,099,511,627,776. Decode: (3,412,480 - 131,072) + 67,108,864 = 70,390,272 B;
    /// at 50 GB/s 1.40781 ms.
    /// </summary>
    [Test]
    public void Recall_public_worked_example()
    {
        var path = RecallPath();
        if (!File.Exists(path)) Assert.Ignore("fixture not found: " + path);
        var card = ArchitectureCard.FromModelIo(OnnxReader.Load(path), out var why)!;
        Assert.That(why, Is.Null);
        Assert.That((card.Layers, card.KvHeads, card.HeadDim, card.Vocab, card.Hidden, card.Heads), Is.EqualTo((4, 2, 32, 256, 128, 4)));
        Assert.That((card.Parameters, card.ParameterBytes, card.EmbeddingParameters, card.WeightDtype, card.KvDtype), Is.EqualTo((853_120L, 3_412_480L, 32_768L, "float32", "float32")));
        Assert.That((card.RopeTheta, card.RotaryDim, card.TrainedContext), Is.EqualTo(((double?)10000, (int?)32, (int?)256)));

        var r = LongCtx.Compiler.Analysis.CostModel.Compute(card, new CostOptions(32768, 24L << 30, 50e9));
        Assert.That(r.KvSizes.Select(k => (k.Precision, k.BytesPerToken)), Is.EqualTo(new[] { ("fp32", 2048L), ("fp16", 1024L), ("int8", 512L), ("int4", 256L) }));
        Assert.That(r.KvSizes[0].BytesAtContext["32k"], Is.EqualTo(64L << 20));
        Assert.That(r.KvSizes[1].BytesAtContext["1M"], Is.EqualTo(1L << 30));
        Assert.That(r.Concurrency!.Select(c => c.Sequences), Is.EqualTo(new[] { 383L, 767L, 1535L, 3071L }));
        Assert.That(r.PrefillLinearFlops, Is.EqualTo(53_762_588_672d));
        Assert.That(r.PrefillAttentionFlops, Is.EqualTo(1_099_511_627_776d));
        Assert.That(r.DecodeBytesPerToken, Is.EqualTo(70_390_272L));
        Assert.That(r.DecodeSecondsPerTokenLowerBound!.Value, Is.EqualTo(70_390_272 / 50e9).Within(1e-12));
    }

    [Test]
    public void Weights_larger_than_memory_fit_nothing()
    {
        var card = new ArchitectureCard(60, 7168, 56, 8, 128, 64000, 34_000_000_000, 68_000_000_000, "float16", 5e6, 128, 200_000) { KvWidth = 1024, KvDtype = "float16" };
        // Yi-34B-like: 2*60*8*128*2 = 245,760 B per token (fp16)
        var r = LongCtx.Compiler.Analysis.CostModel.Compute(card, new CostOptions(50_000, 40_000_000_000, 2e12));
        Assert.That(r.KvSizes[1].BytesPerToken, Is.EqualTo(245_760L));
        Assert.That(r.Concurrency!.All(c => c.Sequences == 0));
        Assert.That(r.ConcurrencyNote, Does.Contain("do not fit"));
        var fits = LongCtx.Compiler.Analysis.CostModel.Compute(card, new CostOptions(50_000, 80_000_000_000, 2e12));
        // (80e9 - 68e9) / (245,760 * 50,000) = 0.976 -> 0 at fp16; int4 (61,440 B/token): 3.9 -> 3
        Assert.That(fits.Concurrency!.Select(c => c.Sequences), Is.EqualTo(new[] { 0L, 0L, 1L, 3L }));
    }

    [Test]
    public void Card_from_builders_without_fixtures()
    {
        var c = new DecoderConfig(Layers: 3, Hidden: 96, Heads: 6, KvHeads: 2, HeadDim: 32, Vocab: 200, RopeTheta: 500000, RotaryDim: 16, MaxPositions: 512);
        var torch = ArchitectureCard.FromModelIo(TorchStyleDecoder.Build(c), out _)!;
        Assert.That((torch.Layers, torch.KvHeads, torch.HeadDim, torch.Vocab, torch.Hidden, torch.Heads), Is.EqualTo((3, 2, 32, 200, 96, (int?)null)));
        Assert.That((torch.RopeTheta, torch.RotaryDim), Is.EqualTo(((double?)500000, (int?)16)));
        var gqa = ArchitectureCard.FromModelIo(GqaDecoder.Build(c with { Dtype = ModelDtype.Float16 }), out _)!;
        Assert.That((gqa.RopeTheta, gqa.RotaryDim, gqa.CosCacheLength, gqa.KvDtype, gqa.WeightDtype), Is.EqualTo(((double?)500000, (int?)16, (int?)512, "float16", "float16")));
        var none = ArchitectureCard.FromModelIo(BertEncoder.Build(c), out var why);
        Assert.That(none, Is.Null);
        Assert.That(why, Does.Contain("no KV-cache inputs"));
        // without heads the attention term is unknown, and the report says why
        var r = LongCtx.Compiler.Analysis.CostModel.Compute(torch, new CostOptions());
        Assert.That(r.PrefillAttentionFlops, Is.Null);
        Assert.That(r.PrefillNote, Does.Contain("heads"));
    }

    [Test]
    public void Demo_model_cost_text_snapshot()
    {
        var card = ArchitectureCard.FromModelIo(DemoModel.Build(), out _)!;
        var text = card.ToText() + LongCtx.Compiler.Analysis.CostModel.Compute(card with { Heads = 4 }, new CostOptions(Units.ParseTokens("32k"), Units.ParseBytes("24GiB"), Units.ParseBandwidth("50GB/s"))).ToText();
        Snapshot.Match(text);
    }

    [Test]
    public void Inspect_cli_prints_card_and_cost_and_rejects_bad_units()
    {
        var path = RecallPath();
        if (!File.Exists(path)) Assert.Ignore("fixture not found: " + path);
        var (rc, stdout, stderr) = RunCli("inspect", path, "--memory", "24GiB", "--bandwidth", "50GB/s", "--context", "32k");
        Assert.That(rc, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("layers 4   hidden 128   heads 4   kv heads 2   head_dim 32   vocab 256"));
        Assert.That(stdout, Does.Contain("fp16                      1 KiB"));
        Assert.That(stdout, Does.Contain("fp32 383 fp16 767 int8 1,535 int4 3,071"));
        var (rcJ, json, _) = RunCli("inspect", path, "--json", "--memory", "24GiB");
        Assert.That(rcJ, Is.EqualTo(0));
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.That(doc.RootElement.GetProperty("architecture").GetProperty("kv_heads").GetInt32(), Is.EqualTo(2));
        Assert.That(doc.RootElement.GetProperty("cost").GetProperty("kv_sizes")[1].GetProperty("bytes_per_token").GetInt64(), Is.EqualTo(1024));
        Assert.That(doc.RootElement.GetProperty("nodes").GetInt32(), Is.GreaterThan(0), "the existing inspect fields stay");
        var (rcBad, _, err) = RunCli("inspect", path, "--memory", "24GX");
        Assert.That(rcBad, Is.EqualTo(1));
        Assert.That(err.Trim(), Is.EqualTo("lcc: error: --memory: unknown unit 'GX' in '24GX'; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. 24GiB)"));
    }

    private static readonly object ConsoleLock = new();

    private static (int Rc, string Out, string Err) RunCli(params string[] args)
    {
        lock (ConsoleLock)
        {
            var (o, e) = (Console.Out, Console.Error);
            var so = new StringWriter(); var se = new StringWriter();
            Console.SetOut(so); Console.SetError(se);
            try { return (LongCtx.Cli.Program.BuildRoot().Parse(args).Invoke(), so.ToString(), se.ToString()); }
            finally { Console.SetOut(o); Console.SetError(e); }
        }
    }
}
