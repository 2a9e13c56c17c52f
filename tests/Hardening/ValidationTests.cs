using System.Diagnostics;
using Google.Protobuf;
using LongCtx.Cli;
using LongCtx.Compiler;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Tests.Foundation;
using NUnit.Framework;
using P = Onnx;

namespace LongCtx.Tests.Hardening;

/// <summary>
/// Issue 14, "Validation (no .NET stack trace anywhere, ever)": each item of the list runs the CLI entry point in
/// process and must give exactly one line "lcc: error: ..." naming the problem (or, where the issue allows, a clamp),
/// never a stack trace. Plus the valid ONNX that used to be refused, and linear-time DCE and Verifier on hostile graphs.
/// </summary>
public sealed class ValidationTests
{
    private string _dir = "";
    private static string _demo = "", _demoDir = "";

    [OneTimeSetUp]
    public void BuildDemo()
    {
        _demoDir = TestSupport.TempDir("val-demo");
        DemoModel.WriteTo(_demoDir);
        _demo = Path.Combine(_demoDir, "model.onnx");
    }

    [OneTimeTearDown] public void RemoveDemo() => Directory.Delete(_demoDir, true);
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("val");
    [TearDown] public void TearDown() => Directory.Delete(_dir, true);

    /// <summary>Exit 1, exactly one stderr line starting "lcc: error: " containing every fragment, no stack trace.</summary>
    private static void OneLineError(CliResult r, params string[] fragments)
    {
        Assert.That(r.ExitCode, Is.EqualTo(1), $"exit code; stdout: {r.Stdout} stderr: {r.Stderr}");
        var lines = r.Stderr.Trim().Split('\n');
        Assert.That(lines, Has.Length.EqualTo(1), r.Stderr);
        Assert.That(lines[0], Does.StartWith("lcc: error: "));
        Assert.That(r.Stderr + r.Stdout, Does.Not.Contain("   at ").And.Not.Contain("Exception:"), "no stack trace");
        foreach (var f in fragments) Assert.That(lines[0], Does.Contain(f).IgnoreCase);
    }

    private static P.ModelProto Tiny() => P.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(TinyGraphs.WithDeadCode()));

    private string Write(P.ModelProto p, string name = "m.onnx")
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, p.ToByteArray());
        return path;
    }

    private string ExternalW(string offset, string length)
    {
        File.WriteAllBytes(Path.Combine(_dir, "w.data"), new byte[64]);
        var p = Tiny();
        var w = p.Graph.Initializer.Single(t => t.Name == "W");
        w.RawData = ByteString.Empty;
        w.DataLocation = P.TensorProto.Types.DataLocation.External;
        w.ExternalData.Add(new P.StringStringEntryProto { Key = "location", Value = "w.data" });
        w.ExternalData.Add(new P.StringStringEntryProto { Key = "offset", Value = offset });
        w.ExternalData.Add(new P.StringStringEntryProto { Key = "length", Value = length });
        return Write(p);
    }

    // ---- model files ----

    [TestCase("abc", "64", "offset 'abc'"), TestCase("1.5", "64", "offset '1.5'"), TestCase("99999999999999999999", "64", "not a non-negative 64-bit integer"),
     TestCase("0", "-5", "length '-5'"), TestCase("9223372036854775800", "64", "overflows")]
    public void ExternalData_BadOffsetOrLength(string offset, string length, string fragment)
    {
        var m = ExternalW(offset, length);
        OneLineError(CliRunner.Run("inspect", m), fragment);
        OneLineError(CliRunner.Run("compile", m, "-o", Path.Combine(_dir, "out")), fragment);
    }

    [Test]
    public void ElementCountOverflow_IsAnError_NotAFewKiB()
    {
        var p = Tiny();
        var w = p.Graph.Initializer.Single(t => t.Name == "unused_weight");
        w.Dims.Clear();
        w.Dims.Add(1L << 31);
        w.Dims.Add(1L << 30); // 2^61 float32 elements
        OneLineError(CliRunner.Run("inspect", Write(p)), "overflows 64 bits");
        w.Dims.Clear();
        w.Dims.Add(long.MaxValue);
        w.Dims.Add(3);
        OneLineError(CliRunner.Run("inspect", Write(p)), "element count overflows");
    }

    [TestCase(P.AttributeProto.Types.AttributeType.Graph, "holds no graph"), TestCase(P.AttributeProto.Types.AttributeType.Tensor, "holds no tensor")]
    public void AttributeOfAKindWithoutItsValue(P.AttributeProto.Types.AttributeType type, string fragment)
    {
        var p = Tiny();
        var relu = p.Graph.Node.Single(n => n.OpType == "Relu");
        relu.Attribute.Add(new P.AttributeProto { Name = type == P.AttributeProto.Types.AttributeType.Graph ? "then_branch" : "value", Type = type });
        OneLineError(CliRunner.Run("inspect", Write(p)), fragment);
    }

    [Test]
    public void KvInputNamesWithHugeLayerIndices_AreNotKvNames()
    {
        Assert.That(LongCtx.Contract.KvNames.Parse("past_key_values.2147483647.key"), Is.Null);
        Assert.That(LongCtx.Contract.KvNames.Parse("past_key_values.99999999999999.key"), Is.Null);
        Assert.That(LongCtx.Contract.KvNames.Parse("past_key_values.65535.value"), Is.Not.Null);
        var p = Tiny();
        p.Graph.Input.Add(new P.ValueInfoProto { Name = "past_key_values.2147483647.key", Type = p.Graph.Input[0].Type });
        var path = Write(p);
        var inspect = CliRunner.Run("inspect", path);
        Assert.That(inspect.Stderr, Does.Not.Contain("   at "));
        OneLineError(CliRunner.Run("run", "--ep", "cpu", path, "--prompt-ids", "1,2"), "cannot map model input");
    }

    [Test]
    public void ScalarCosCache_IsAnErrorOrIgnored_NeverACrash()
    {
        var compiled = Path.Combine(_dir, "c");
        CompileJob.Run(_demo, compiled, Pipelines.Instantiate(Pipelines.Default));
        var p = P.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(compiled, "model.onnx")));
        var gqa = p.Graph.Node.First(n => n.OpType == "GroupQueryAttention");
        Assume.That(gqa.Input.Count, Is.GreaterThan(8), "the demo's GroupQueryAttention reads cos/sin caches");
        foreach (var name in new[] { gqa.Input[7], gqa.Input[8] })
        {
            var t = p.Graph.Initializer.Single(i => i.Name == name);
            t.Dims.Clear();
            t.RawData = ByteString.CopyFrom(new byte[4]);
            t.DataLocation = P.TensorProto.Types.DataLocation.Default;
            t.ExternalData.Clear();
        }
        var bad = Write(p, "scalar-cos.onnx");
        foreach (var args in new[] { new[] { "inspect", bad }, ["compile", bad, "-o", Path.Combine(_dir, "out")], ["compile", bad, "-o", Path.Combine(_dir, "out2"), "--rope", "linear", "--context", "1024"] })
        {
            var r = CliRunner.Run(args);
            Assert.That(r.Stderr + r.Stdout, Does.Not.Contain("   at ").And.Not.Contain("internal error"), string.Join(" ", args));
            if (r.ExitCode != 0) OneLineError(r);
        }
    }

    // ---- eval files ----

    [TestCase("{\"id\": 1.5, \"prompt\": [1, 2], \"expected\": 3}", "\"id\""), TestCase("{\"id\": \"x\", \"prompt\": [1, 2], \"expected\": 3}", "\"id\""),
     TestCase("{\"prompt\": [1, 99999999999], \"expected\": 3}", "\"prompt\""), TestCase("{\"prompt\": [1, 2], \"expected\": -3}", "\"expected\""),
     TestCase("{\"prompt\": [1, \"a\"], \"expected\": 3}", "\"prompt\"")]
    public void Eval_JsonlWithNonIntegerIds(string line, string field)
    {
        var f = Path.Combine(_dir, "n.jsonl");
        File.WriteAllText(f, line + "\n");
        OneLineError(CliRunner.Run("eval", "--ep", "cpu", _demo, "--needle", f), field, "n.jsonl:1");
    }

    [Test]
    public void Eval_OnAnEmptySet_IsAnError_NotAccuracyZero()
    {
        var f = Path.Combine(_dir, "empty.jsonl");
        File.WriteAllText(f, "\n\n");
        OneLineError(CliRunner.Run("eval", "--ep", "cpu", _demo, "--needle", f), "no prompts");
    }

    [Test]
    public void Eval_JsonOut_IsCheckedBeforeTheWork_AndNothingIsWritten()
    {
        var f = Path.Combine(_dir, "n.jsonl");
        File.WriteAllText(f, "{\"prompt\": [1, 2, 3], \"expected\": 3}\n");
        var missing = Path.Combine(_dir, "no-such-folder", "r.json");
        var sw = Stopwatch.StartNew();
        OneLineError(CliRunner.Run("eval", "--ep", "cpu", Path.Combine(_dir, "not-a-model"), "--needle", f, "--json-out", missing), "does not exist");
        OneLineError(CliRunner.Run("eval", "--ep", "cpu", _demo, "--needle", f, "--json-out", _dir), "not a regular file");
        Assert.That(Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "n.jsonl" }), "nothing written");
        var ok = Path.Combine(_dir, "r.json");
        var r = CliRunner.Run("eval", "--ep", "cpu", _demo, "--needle", f, "--json-out", ok);
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
        Assert.That(File.ReadAllText(ok), Does.Contain("accuracy"));
        Assert.That(Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "n.jsonl", "r.json" }), "no temp file left");
    }

    [Test]
    public void Bench_PlotAndJsonPaths_AreCheckedBeforeTheWork()
    {
        var missing = Path.Combine(_dir, "nope", "b.png");
        OneLineError(CliRunner.Run("bench", "--ep", "cpu", _demo, "--lengths", "8", "--plot", missing), "--plot", "does not exist");
        OneLineError(CliRunner.Run("bench", "--ep", "cpu", _demo, "--lengths", "8", "--json-out", missing), "--json-out");
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.Empty);
    }

    // ---- tokenizer.json ----

    [TestCase("[1, 2, 3]"), TestCase("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}"),
     TestCase("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 1.5}}}"), TestCase("{\"model\": {\"type\": 7, \"vocab\": {}}}"),
     TestCase("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": 5}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}"),
     TestCase("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}}, {\"type\": \"ByteLevel\"}]}}")]
    public void MalformedTokenizerJson_IsOneLineNamingTheFile(string json)
    {
        var folder = Path.Combine(_dir, "m");
        Directory.CreateDirectory(folder);
        File.Copy(_demo, Path.Combine(folder, "model.onnx"));
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json);
        OneLineError(CliRunner.Run("run", "--ep", "cpu", Path.Combine(folder, "model.onnx"), "--prompt", "hello"), "tokenizer.json");
    }

    // ---- CLI sizes ----

    [TestCase("inspect", "--context", "99999999999999999999k", "too large"), TestCase("inspect", "--context", "0", "at least one token"),
     TestCase("inspect", "--memory", "99999999999999999999TiB", "too large"), TestCase("inspect", "--bandwidth", "99999999999999999999TB/s", "too large"),
     TestCase("inspect", "--context", "abc", "cannot read")]
    public void InspectSizes(string cmd, string option, string value, string fragment) =>
        OneLineError(CliRunner.Run(cmd, _demo, option, value), option, fragment);

    [TestCase("", "at least one"), TestCase("99999999k", "too large"), TestCase("-5", "not a length"), TestCase("4x", "not a length")]
    public void BenchLengths(string lengths, string fragment) =>
        OneLineError(CliRunner.Run("bench", "--ep", "cpu", _demo, "--lengths", lengths, "--json-out", Path.Combine(_dir, "b.json"), "--plot", Path.Combine(_dir, "b.png")), "--lengths", fragment);

    [Test]
    public void CompileContextOverflow_AndUnparsableNumbers_AreOneLine()
    {
        OneLineError(CliRunner.Run("compile", _demo, "-o", Path.Combine(_dir, "o"), "--rope", "linear", "--context", "2147483647"), "context=2147483647", "out of range");
        OneLineError(CliRunner.Run("compile", _demo, "-o", Path.Combine(_dir, "o"), "--context", "99999999999999999999k"), "99999999999999999999k");
        OneLineError(CliRunner.Run("run", "--ep", "cpu", _demo, "--prompt-ids", "1", "--max-context", "99999999999"), "99999999999");
        OneLineError(CliRunner.Run("run", "--ep", "cpu", _demo, "--prompt-ids", "1,99999999999"), "99999999999");
    }

    [Test]
    public void MaxContextBeyondMemory_IsAClearError_BeforeAllocating()
    {
        OneLineError(CliRunner.Run("run", "--ep", "cpu", _demo, "--prompt-ids", "1,2", "--kv-cache", "shared", "--max-context", "2000000000"), "--max-context", "GiB", "memory available");
        var model = LongCtxModel.Load(_demo, new RuntimeOptions { ExecutionProvider = ExecutionProviderKind.Cpu });
        using (model)
            Assert.That(() => KvBufferBudget.Check("m", model.Contract, 1 << 20, available: 1L << 20), Throws.TypeOf<RuntimeException>().With.Message.Contains("give at most --max-context"));
    }

    [TestCase("-1"), TestCase("100000")]
    public void ThreadsBeyondTheCores(string threads) =>
        OneLineError(CliRunner.Run("run", "--ep", "cpu", _demo, "--prompt-ids", "1,2", "--threads", threads), "--threads", "logical cores");

    // ---- sampling ----

    [TestCase("--temperature", "NaN", "temperature"), TestCase("--temperature", "-1", "temperature"), TestCase("--top-p", "0", "top-p"),
     TestCase("--top-p", "1.5", "top-p"), TestCase("--top-p", "NaN", "top-p"), TestCase("--top-k", "-3", "top-k"), TestCase("--max-new-tokens", "-1", "max new tokens")]
    public void SamplingOptionsOutOfRange(string option, string value, string fragment) =>
        OneLineError(CliRunner.Run("run", "--ep", "cpu", _demo, "--prompt-ids", "1,2,3", option, value), fragment);

    [Test]
    public void TinyTemperature_SamplesTheMostLikelyToken_NeverTheLeast()
    {
        var logits = new float[] { 1f, 5f, -3f, 4.9999f };
        foreach (var t in new[] { 1e-30f, 1e-10f, 1e-6f, float.Epsilon })
            for (int seed = 0; seed < 20; seed++)
                Assert.That(Sampler.Sample(logits, new GenerationOptions { Temperature = t }.Validated(), new Random(seed)), Is.EqualTo(1), $"T={t}");
        Assert.That(Sampler.Sample(logits, new GenerationOptions { Temperature = 1e-3f }, new Random(1)), Is.EqualTo(1), "T=1e-3: (5 - 4.9999)/T = 0.1, yet p(3)/p(1) = e^-0.1; over 20 draws at least one is 1");
        Assert.That(Sampler.Sample(logits, new GenerationOptions { Temperature = float.NaN }, new Random(1)), Is.EqualTo(1), "a NaN that bypasses validation is greedy");
    }

    // ---- RoPE options ----

    [TestCase("ntk:factor=1e-300", "factor"), TestCase("ntk:factor=NaN", "factor"), TestCase("yarn:attention-factor=0", "attention-factor"),
     TestCase("yarn:attention_factor=-1", "attention-factor"), TestCase("llama3:original-max-position=0", "original-max-position"),
     TestCase("llama3:high-freq-factor=1", "high-freq-factor"), TestCase("giraffe-power:power=-1", "power"), TestCase("linear:theta=0.5", "theta"),
     TestCase("yarn:beta_fast=0", "beta-fast")]
    public void RopeValuesThatMakeNaNOrZeroTables_AreRefusedWithTheRange(string rope, string key)
    {
        var r = CliRunner.Run("compile", _demo, "-o", Path.Combine(_dir, "o"), "--rope", rope, "--context", "1024");
        OneLineError(r, key);
        if (!key.StartsWith("high")) Assert.That(r.Stderr, Does.Contain("valid:"));
    }

    [TestCase("yarn:atention-factor=1.2"), TestCase("ntk:facter=2")]
    public void RopeMisspelledKeys_AreRefused(string rope) =>
        OneLineError(CliRunner.Run("compile", _demo, "-o", Path.Combine(_dir, "o"), "--rope", rope, "--context", "1024"), "unknown option");

    [Test]
    public void RopeHfSpellings_AreAliases()
    {
        var yarn = LongCtx.Cli.Commands.RopeOptions.Parse("yarn:attention_factor=1.2,beta_fast=16,beta_slow=1", 1024, null, false).Single().Options!;
        Assert.That(yarn.Keys, Is.SupersetOf(new[] { "attention-factor", "beta-fast", "beta-slow" }));
        var l3 = LongCtx.Cli.Commands.RopeOptions.Parse("llama3:original_max_position_embeddings=256,low_freq_factor=1,high_freq_factor=4", 1024, null, false).Single().Options!;
        Assert.That(l3.Keys, Is.SupersetOf(new[] { "original-max-position", "low-freq-factor", "high-freq-factor" }));
    }

    // ---- longctx.json ----

    [TestCase("{\"runtime\": {\"max_context\": \"abc\"}}", "runtime.max_context"), TestCase("{\"runtime\": {\"max_context\": -5}}", "runtime.max_context"),
     TestCase("{\"runtime\": {\"kv\": {\"policy\": \"streaming\", \"sink\": -1, \"window\": 8}}}", "runtime.kv.sink"), TestCase("{\"pipeline\": 5}", "pipeline"),
     TestCase("{\"runtime\": {\"opsets\": {\"\": \"x\"}}}", "runtime.opsets"), TestCase("{\"runtime\": {\"max_context\": 1e40}}", "runtime.max_context")]
    public void LongctxJson_FieldOfTheWrongTypeOrRange_NamesTheFileAndField(string json, string field)
    {
        var folder = Path.Combine(_dir, "c");
        Directory.CreateDirectory(folder);
        File.Copy(_demo, Path.Combine(folder, "model.onnx"));
        File.WriteAllText(Path.Combine(folder, "longctx.json"), json);
        OneLineError(CliRunner.Run("run", "--ep", "cpu", folder, "--prompt-ids", "1,2"), "longctx.json", field);
    }

    // ---- parse errors and the last line of defence ----

    [Test]
    public void ParseErrors_AreOneLine()
    {
        OneLineError(CliRunner.Run("run", _demo, "--temperature", "abc"), "abc", "lcc run --help");
        OneLineError(CliRunner.Run("inspect", _demo, "--no-such-flag"), "--no-such-flag", "--help");
        OneLineError(CliRunner.Run("no-such-command"), "no-such-command");
    }

    [Test]
    public void InternalError_IsOneLine_AndTheStackOnlyWithVerbose()
    {
        var e = new NullReferenceException("boom");
        var quiet = new StringWriter();
        Assert.That(Program.ReportInternalError(e, verbose: false, quiet), Is.EqualTo(Program.InternalError));
        Assert.That(quiet.ToString().Trim(), Is.EqualTo("lcc: internal error: NullReferenceException: boom; run with -v for details"));
        Exception thrown;
        try { throw new InvalidCastException("bad\ncast"); } catch (Exception x) { thrown = x; }
        var loud = new StringWriter();
        Program.ReportInternalError(thrown, verbose: true, loud);
        Assert.That(loud.ToString(), Does.StartWith("lcc: internal error: InvalidCastException: bad cast\n").And.Contain("   at "));
    }

    // ---- valid ONNX that used to be refused ----

    [Test]
    public void IfBranchesEachDefiningTheSameLocalName_AreAccepted()
    {
        var p = Tiny();
        var relu = p.Graph.Node.Single(n => n.OpType == "Relu");
        P.GraphProto Branch(string name, string op)
        {
            var b = new P.GraphProto { Name = name };
            b.Node.Add(new P.NodeProto { Name = name + "_n", OpType = op, Input = { "y" }, Output = { "local" } });
            b.Output.Add(new P.ValueInfoProto { Name = "local" });
            return b;
        }
        p.Graph.Initializer.Add(new P.TensorProto { Name = "cond", DataType = (int)P.TensorProto.Types.DataType.Bool, RawData = ByteString.CopyFrom(1) });
        var iff = new P.NodeProto { Name = "if", OpType = "If", Input = { "cond" }, Output = { "z" } };
        iff.Attribute.Add(new P.AttributeProto { Name = "then_branch", Type = P.AttributeProto.Types.AttributeType.Graph, G = Branch("then", "Neg") });
        iff.Attribute.Add(new P.AttributeProto { Name = "else_branch", Type = P.AttributeProto.Types.AttributeType.Graph, G = Branch("else", "Abs") });
        p.Graph.Node.Add(iff);
        p.Graph.Output.Clear();
        p.Graph.Output.Add(new P.ValueInfoProto { Name = "z", Type = p.Graph.Input[0].Type });
        var path = Write(p, "if.onnx");
        var m = OnnxReader.Load(path);
        Assert.That(Verifier.Check(m), Is.Empty);
        var r = CliRunner.Run("compile", path, "-o", Path.Combine(_dir, "out"));
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
        // A subgraph name that shadows an outer one is still refused.
        var shadow = Tiny();
        shadow.Graph.Initializer.Add(new P.TensorProto { Name = "cond", DataType = (int)P.TensorProto.Types.DataType.Bool, RawData = ByteString.CopyFrom(1) });
        var b2 = new P.GraphProto { Name = "then" };
        b2.Node.Add(new P.NodeProto { OpType = "Neg", Input = { "y" }, Output = { "mm" } });
        b2.Output.Add(new P.ValueInfoProto { Name = "mm" });
        var iff2 = new P.NodeProto { Name = "if", OpType = "If", Input = { "cond" }, Output = { "z" } };
        iff2.Attribute.Add(new P.AttributeProto { Name = "then_branch", Type = P.AttributeProto.Types.AttributeType.Graph, G = b2 });
        iff2.Attribute.Add(new P.AttributeProto { Name = "else_branch", Type = P.AttributeProto.Types.AttributeType.Graph, G = b2.Clone() });
        shadow.Graph.Node.Add(iff2);
        Assert.That(Assert.Throws<ModelFormatException>(() => OnnxReader.Load(Write(shadow, "shadow.onnx")))!.Message, Does.Contain("shadows"));
    }

    [TestCase(false), TestCase(true)]
    public void SparseInitializerReadByANode_IsAccepted_AsItsDenseValue(bool coordinates)
    {
        var p = Tiny();
        var b = p.Graph.Initializer.Single(t => t.Name == "b");
        p.Graph.Initializer.Remove(b);
        // b = [0.5, -0.5, 1, 0] as sparse: values at positions 0, 1, 2
        var sp = new P.SparseTensorProto { Dims = { 4 } };
        sp.Values = new P.TensorProto { Name = "b", DataType = (int)P.TensorProto.Types.DataType.Float, Dims = { 3 }, FloatData = { 0.5f, -0.5f, 1f } };
        sp.Indices = new P.TensorProto { Name = "b_idx", DataType = (int)P.TensorProto.Types.DataType.Int64, Int64Data = { 0, 1, 2 } };
        sp.Indices.Dims.Add(3);
        if (coordinates) sp.Indices.Dims.Add(1);
        p.Graph.SparseInitializer.Add(sp);
        var path = Write(p, "sparse.onnx");
        var m = OnnxReader.Load(path);
        Assert.That(m.Graph.Initializers.Single(v => v.Name == "b").Const!.ToFloats(), Is.EqualTo(new[] { 0.5f, -0.5f, 1f, 0f }));
        Assert.That(Verifier.Check(m), Is.Empty);
        var r = CliRunner.Run("compile", path, "-o", Path.Combine(_dir, "out"));
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
        var back = OnnxReader.Load(Path.Combine(_dir, "out", "model.onnx"));
        // dedup merges b with its identical twin b_copy: proof that the dense value is the one b_copy holds
        Assert.That(back.Graph.Initializers.Where(v => v.Const!.Dims.SequenceEqual(new long[] { 4 })).Select(v => v.Const!.ToFloats()),
            Has.Some.EqualTo(new[] { 0.5f, -0.5f, 1f, 0f }));
        Assert.That(back.Graph.Initializers.Select(v => v.Name), Has.No.Member("b_copy").Or.No.Member("b"), "b and b_copy were found identical");
    }

    // ---- linear time on hostile graphs ----

    private const int Readers = 100_000;

    [Test]
    public void Dce_Over100kDeadReadersOfOneValue_IsLinear()
    {
        var m = Model.Create("dead", 17);
        var r = new Rewriter(m);
        var x = r.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(4)));
        var y = r.Op(m.Graph, "Relu", [x], outputName: "y");
        r.AddOutput(m.Graph, y);
        for (int i = 0; i < Readers; i++) r.Op(m.Graph, "Neg", [x], outputName: $"dead{i}");
        Assert.That(x.Uses, Has.Count.EqualTo(Readers + 1));
        var sw = Stopwatch.StartNew();
        var result = LongCtx.Compiler.Passes.PassManager.Run(m, Pipelines.Instantiate([new LongCtx.Compiler.Passes.PipelineStep("dce")]), new() { Verify = true });
        sw.Stop();
        Assert.That(result.Passes.Single().Counts["nodes removed"], Is.EqualTo(Readers));
        Assert.That(m.Graph.Nodes, Has.Count.EqualTo(1));
        Assert.That(x.Uses, Has.Count.EqualTo(1));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), "linear: ~0.1 s; the quadratic version took minutes");
        TestContext.Out.WriteLine($"dce over {Readers} dead readers + verify: {sw.Elapsed.TotalMilliseconds:0} ms");
    }

    [Test]
    public void Verifier_OnASumOf100kCopiesOfOneInput_IsLinear()
    {
        var m = Model.Create("sum", 17);
        var r = new Rewriter(m);
        var x = r.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(4)));
        var s = r.Op(m.Graph, "Sum", Enumerable.Repeat(x, Readers).ToArray(), outputName: "s");
        r.AddOutput(m.Graph, s);
        var sw = Stopwatch.StartNew();
        Assert.That(Verifier.Check(m), Is.Empty);
        sw.Stop();
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(30)), "linear: milliseconds; the quadratic version took minutes");
        TestContext.Out.WriteLine($"verifier on Sum of {Readers} copies: {sw.Elapsed.TotalMilliseconds:0} ms");
    }
}
