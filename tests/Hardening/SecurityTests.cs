using System.Diagnostics;
using Google.Protobuf;
using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using LongCtx.Passes;
using LongCtx.Tests.Foundation;
using NUnit.Framework;
using P = Onnx;

namespace LongCtx.Tests.Hardening;

/// <summary>
/// Issue 14, "Security and data loss": every repro as a regression test. Hostile model folders (symlinks out of the
/// folder, FIFOs, endless devices), the source hash reading only the ranges tensors use, the output-folder guard
/// (never replace a folder holding the input) and the atomic claim of OUTDIR (racing compiles, stale temp folders).
/// Anything that could block (a FIFO) runs under a timeout so that a regression fails instead of hanging the suite.
/// </summary>
public sealed class SecurityTests
{
    private string _dir = "", _outside = "";

    [SetUp]
    public void SetUp()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("symlinks, FIFOs and /dev are Unix");
        _dir = TestSupport.TempDir("sec");
        _outside = TestSupport.TempDir("sec-outside");
    }

    [TearDown]
    public void TearDown()
    {
        foreach (var d in new[] { _dir, _outside }) if (Directory.Exists(d)) Directory.Delete(d, true);
    }

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    /// <summary>Runs <paramref name="action"/> on a worker and fails (instead of hanging) if it does not finish.</summary>
    private static T Bounded<T>(Func<T> action)
    {
        var t = Task.Run(action);
        Assert.That(t.Wait(Limit), Is.True, $"did not finish within {Limit.TotalSeconds} s (blocked on a FIFO or an endless file?)");
        return t.Result;
    }

    /// <summary>The tiny model with every initializer in model.onnx.data; returns the model path.</summary>
    private string ExternalModel(string? dir = null)
    {
        dir ??= Path.Combine(_dir, "m");
        Directory.CreateDirectory(dir);
        var p = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(TinyGraphs.WithDeadCode(), p, new SaveOptions { ExternalDataThreshold = 1 });
        Assert.That(File.Exists(p + ".data"), Is.True);
        return p;
    }

    private static void MkFifo(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        p.WaitForExit();
        Assume.That(p.ExitCode, Is.Zero, "mkfifo failed");
    }

    private static void AssertOneLineError(CliResult r, params string[] fragments)
    {
        Assert.That(r.ExitCode, Is.EqualTo(1), r.Stdout + r.Stderr);
        var lines = r.Stderr.Trim().Split('\n');
        Assert.That(lines, Has.Length.EqualTo(1), r.Stderr);
        Assert.That(lines[0], Does.StartWith("lcc: error: "));
        Assert.That(r.Stderr, Does.Not.Contain("   at "), "no stack trace");
        foreach (var f in fragments) Assert.That(lines[0], Does.Contain(f));
    }

    private string MoveDataOutside(string model, string target)
    {
        var data = model + ".data";
        File.Move(data, target);
        File.CreateSymbolicLink(data, target);
        return data;
    }

    // ---- 1. reads outside the model folder ----

    [Test]
    public void ExternalData_SymlinkToAFileOutsideTheFolder_IsRefused_NothingCopied()
    {
        var model = ExternalModel();
        MoveDataOutside(model, Path.Combine(_outside, "secret.bin"));
        var e = Assert.Throws<ModelFormatException>(() => OnnxReader.Load(model))!;
        Assert.That(e.Message, Does.Contain("outside the folder").And.Contain("secret.bin").And.Not.Contain("\n"));
        var outDir = Path.Combine(_dir, "out");
        AssertOneLineError(CliRunner.Run("compile", model, "-o", outDir), "outside the folder");
        Assert.That(Directory.Exists(outDir), Is.False);
        AssertOneLineError(CliRunner.Run("diff", model, model), "outside the folder");
    }

    [Test]
    public void ExternalData_SymlinkedFolderComponent_IsRefused()
    {
        // The data file name is plain, but its folder component is a link out of the model folder.
        var model = ExternalModel();
        var proto = P.ModelProto.Parser.ParseFrom(File.ReadAllBytes(model));
        foreach (var t in proto.Graph.Initializer)
            t.ExternalData.Single(kv => kv.Key == "location").Value = "sub/model.onnx.data";
        File.WriteAllBytes(model, proto.ToByteArray());
        File.Move(model + ".data", Path.Combine(_outside, "model.onnx.data"));
        Directory.CreateSymbolicLink(Path.Combine(_dir, "m", "sub"), _outside);
        var e = Assert.Throws<ModelFormatException>(() => OnnxReader.Load(model))!;
        Assert.That(e.Message, Does.Contain("outside the folder"));
    }

    [Test]
    public void ExternalData_SymlinkInsideTheFolder_IsAccepted()
    {
        var model = ExternalModel();
        var real = Path.Combine(_dir, "m", "weights.bin");
        File.Move(model + ".data", real);
        File.CreateSymbolicLink(model + ".data", "weights.bin");
        var m = OnnxReader.Load(model);
        Assert.That(m.Graph.Initializers.Count(), Is.GreaterThan(0));
        var r = CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out"));
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
    }

    [Test]
    public void ExternalData_SymlinkToProcSelfEnviron_IsRefused()
    {
        Assume.That(File.Exists("/proc/self/environ"), "no /proc");
        var model = ExternalModel();
        File.Delete(model + ".data");
        File.CreateSymbolicLink(model + ".data", "/proc/self/environ");
        AssertOneLineError(Bounded(() => CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out"))), "/proc/", "outside the folder");
    }

    [TestCase("config.json"), TestCase("tokenizer.json"), TestCase("vocab.txt"), TestCase("generation_config.json")]
    public void Sidecar_SymlinkToAFileOutsideTheFolder_IsRefused_NothingCopied(string sidecar)
    {
        var model = ExternalModel();
        var secret = Path.Combine(_outside, "secret.txt");
        File.WriteAllText(secret, "SECRET=1\n");
        File.CreateSymbolicLink(Path.Combine(_dir, "m", sidecar), secret);
        var outDir = Path.Combine(_dir, "out");
        var r = CliRunner.Run("compile", model, "-o", outDir);
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.Stderr, Does.Contain(sidecar).And.Contain("outside the folder"));
        Assert.That(r.Stderr, Does.Not.Contain("   at "));
        Assert.That(Directory.Exists(outDir), Is.False, "nothing was written");
    }

    [Test]
    public void Sidecar_RegularFile_IsCopiedAsBytes()
    {
        var model = ExternalModel();
        File.WriteAllText(Path.Combine(_dir, "m", "vocab.txt"), "a\nb\n");
        var outDir = Path.Combine(_dir, "out");
        Assert.That(CliRunner.Run("compile", model, "-o", outDir).ExitCode, Is.Zero);
        var copy = new FileInfo(Path.Combine(outDir, "vocab.txt"));
        Assert.That(copy.LinkTarget, Is.Null);
        Assert.That(File.ReadAllText(copy.FullName), Is.EqualTo("a\nb\n"));
    }

    // ---- 2. special files: FIFOs and endless devices, never opened ----

    [Test]
    public void ExternalData_Fifo_IsRefusedWithoutBlocking()
    {
        var model = ExternalModel();
        File.Delete(model + ".data");
        MkFifo(model + ".data");
        var e = Bounded(() => Assert.Throws<ModelFormatException>(() => OnnxReader.Load(model))!);
        Assert.That(e.Message, Does.Contain("FIFO"));
        AssertOneLineError(Bounded(() => CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out"))), "FIFO");
        AssertOneLineError(Bounded(() => CliRunner.Run("diff", model, model)), "FIFO");
        AssertOneLineError(Bounded(() => CliRunner.Run("inspect", model)), "FIFO");
    }

    [TestCase("config.json"), TestCase("tokenizer.json"), TestCase("merges.txt")]
    public void Sidecar_Fifo_IsRefusedWithoutBlocking(string sidecar)
    {
        var model = ExternalModel();
        MkFifo(Path.Combine(_dir, "m", sidecar));
        var r = Bounded(() => CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out")));
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.Stderr, Does.Contain("FIFO").And.Not.Contain("   at "));
    }

    [TestCase("/dev/zero"), TestCase("/dev/urandom")]
    public void ExternalData_LinkToAnEndlessDevice_IsRefused(string device)
    {
        Assume.That(File.Exists(device), $"no {device}");
        var model = ExternalModel();
        File.Delete(model + ".data");
        File.CreateSymbolicLink(model + ".data", device);
        AssertOneLineError(Bounded(() => CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out"))), device);
        AssertOneLineError(Bounded(() => CliRunner.Run("diff", model, model)), device);
    }

    [Test]
    public void SafeFile_RefusesDevicesFifosAndFolders_ByStat_BeforeOpening()
    {
        var fifo = Path.Combine(_dir, "pipe");
        MkFifo(fifo);
        Assert.That(SafeFile.Stat(fifo).Kind, Is.EqualTo(FileKind.Fifo));
        Assert.That(SafeFile.Stat(_dir).Kind, Is.EqualTo(FileKind.Directory));
        if (File.Exists("/dev/zero")) Assert.That(SafeFile.Stat("/dev/zero").Kind, Is.EqualTo(FileKind.CharDevice));
        var e = Bounded(() => Assert.Throws<UnsafeFileException>(() => SafeFile.ReadText(fifo, 1024))!);
        Assert.That(e.Message, Does.Contain("FIFO"));
        Assert.Throws<UnsafeFileException>(() => SafeFile.ReadText(_dir, 1024));
        if (File.Exists("/dev/zero"))
            Assert.That(Assert.Throws<UnsafeFileException>(() => SafeFile.ReadText("/dev/zero", 1024))!.Message, Does.Contain("character device"));
        var f = Path.Combine(_dir, "f.txt");
        File.WriteAllText(f, "hello");
        Assert.That(SafeFile.Stat(f), Is.EqualTo((FileKind.Regular, 5L)));
        Assert.That(SafeFile.ReadText(f, 5), Is.EqualTo("hello"));
        Assert.That(Assert.Throws<UnsafeFileException>(() => SafeFile.ReadText(f, 4))!.Message, Does.Contain("larger than 4 bytes"));
    }

    [Test]
    public void SafeFile_RealPath_ResolvesEveryComponent_AndLinkLoopsAreAnError()
    {
        var target = Path.Combine(_outside, "t.txt");
        File.WriteAllText(target, "x");
        Directory.CreateSymbolicLink(Path.Combine(_dir, "d"), _outside);
        File.CreateSymbolicLink(Path.Combine(_dir, "rel"), "d/t.txt");
        Assert.That(SafeFile.RealPath(Path.Combine(_dir, "rel")), Is.EqualTo(SafeFile.RealPath(target)));
        Assert.That(SafeFile.RealPath(Path.Combine(_dir, "d", "not-yet", "x")), Is.EqualTo(Path.Combine(SafeFile.RealPath(_outside), "not-yet", "x")));
        File.CreateSymbolicLink(Path.Combine(_dir, "loop1"), "loop2");
        File.CreateSymbolicLink(Path.Combine(_dir, "loop2"), "loop1");
        Assert.Throws<UnsafeFileException>(() => SafeFile.RealPath(Path.Combine(_dir, "loop1")));
    }

    [Test]
    public void CappedReads_LongctxJson_TokenizerJson_PromptFile_EvalLines()
    {
        var fifo = Path.Combine(_dir, "pipe");
        MkFifo(fifo);
        AssertOneLineError(Bounded(() => CliRunner.Run("run", Path.Combine(_dir, "nothing"), "--prompt-file", fifo)));
        Assert.That(Bounded(() => Assert.Throws<UnsafeFileException>(() => LongCtxManifest.Read(fifo))!).Message, Does.Contain("FIFO"));
        var jsonl = Path.Combine(_dir, "one-long-line.jsonl");
        File.WriteAllText(jsonl, "{\"prompt\": [" + string.Join(",", Enumerable.Repeat("1", 100)) + "], \"expected\": 1}\n");
        Assert.That(SafeFile.ReadLines(jsonl, 1 << 20, 1 << 20).Count(), Is.EqualTo(1));
        var e = Assert.Throws<UnsafeFileException>(() => SafeFile.ReadLines(jsonl, 1 << 20, 50).ToList())!;
        Assert.That(e.Message, Does.Contain(":1: line longer than 50"));
        Assert.That(Bounded(() => Assert.Throws<UnsafeFileException>(() => LongCtx.Runtime.Eval.NeedleEval.Read(fifo))!).Message, Does.Contain("FIFO"));
    }

    [Test]
    public void ZeroElementTensor_WithAHostileLocation_ReadsNothing()
    {
        // A zero-element tensor needs 0 bytes: its location must still be a regular file inside the folder (a FIFO is
        // refused, never opened), and a huge data file is never hashed whole.
        var dir = Path.Combine(_dir, "z");
        Directory.CreateDirectory(dir);
        var proto = P.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(TinyGraphs.WithDeadCode()));
        var z = new P.TensorProto { Name = "Z", DataType = (int)P.TensorProto.Types.DataType.Float, DataLocation = P.TensorProto.Types.DataLocation.External };
        z.Dims.Add(0);
        z.ExternalData.Add(new P.StringStringEntryProto { Key = "location", Value = "z.data" });
        z.ExternalData.Add(new P.StringStringEntryProto { Key = "offset", Value = "0" });
        z.ExternalData.Add(new P.StringStringEntryProto { Key = "length", Value = "0" });
        proto.Graph.Initializer.Add(z);
        var model = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(model, proto.ToByteArray());

        MkFifo(Path.Combine(dir, "z.data"));
        AssertOneLineError(Bounded(() => CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out1"))), "FIFO");

        File.Delete(Path.Combine(dir, "z.data"));
        using (var fs = new FileStream(Path.Combine(dir, "z.data"), FileMode.CreateNew)) fs.SetLength(4L << 30); // sparse
        var r = Bounded(() => CompileJob.Run(model, Path.Combine(_dir, "out2"), Pipelines.Instantiate(Pipelines.Default)));
        Assert.That(r.Manifest.Source!.Bytes, Is.EqualTo(new FileInfo(model).Length), "only the model file and the (empty) ranges were hashed");
    }

    // ---- 2b. the source hash covers exactly the byte ranges tensors use ----

    [Test]
    public void SourceHash_CoversTheUsedRanges_NotTheWholeDataFile()
    {
        var model = ExternalModel();
        var m = OnnxReader.Load(model);
        var h0 = CompileJob.HashSource(m, model);
        long used = m.Graph.Initializers.Sum(v => ((LongCtx.Compiler.IR.ExternalSource)v.Const!.Source).ByteLength);
        Assert.That(h0.Bytes, Is.EqualTo(new FileInfo(model).Length + used));
        using (var fs = new FileStream(model + ".data", FileMode.Append)) fs.Write(new byte[4096]);
        Assert.That(CompileJob.HashSource(OnnxReader.Load(model), model).Sha256, Is.EqualTo(h0.Sha256), "bytes no tensor uses do not count");
        var bytes = File.ReadAllBytes(model + ".data");
        bytes[0] ^= 0xFF;
        File.WriteAllBytes(model + ".data", bytes);
        Assert.That(CompileJob.HashSource(OnnxReader.Load(model), model).Sha256, Is.Not.EqualTo(h0.Sha256), "a used byte does");
    }

    // ---- 3. output-folder guard ----

    [Test]
    public void Compile_OutputEqualToTheModelFolder_IsRefused_EvenWithForce()
    {
        var model = ExternalModel();
        var before = Directory.GetFiles(Path.GetDirectoryName(model)!).Order().ToArray();
        AssertOneLineError(CliRunner.Run("compile", model, "-o", Path.GetDirectoryName(model)!, "--force"), "contains the input", "whatever the flags");
        Assert.That(Directory.GetFiles(Path.GetDirectoryName(model)!).Order(), Is.EqualTo(before), "the model folder is untouched");
    }

    [Test]
    public void Compile_OutputAnAncestorOfTheModel_IsRefused_EvenWithForce()
    {
        var model = ExternalModel(Path.Combine(_dir, "a", "b", "m"));
        AssertOneLineError(CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "a"), "--force"), "contains the input");
        AssertOneLineError(CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "a", "b", "m", ".."), "--force"), "contains the input");
        Assert.That(File.Exists(model) && File.Exists(model + ".data"), Is.True);
    }

    [Test]
    public void Compile_OutputThroughASymlinkToTheModelFolder_IsRefused()
    {
        var model = ExternalModel();
        var link = Path.Combine(_dir, "alias");
        Directory.CreateSymbolicLink(link, Path.GetDirectoryName(model)!);
        AssertOneLineError(CliRunner.Run("compile", model, "-o", link, "--force"), "contains the input");
        Assert.That(File.Exists(model), Is.True);
    }

    [Test]
    public void Compile_OutputDot_IsRefused_ModelInTheWorkingDirectory()
    {
        var model = ExternalModel();
        var cwd = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = Path.GetDirectoryName(model)!;
            AssertOneLineError(CliRunner.Run("compile", "model.onnx", "-o", ".", "--force"), "contains the input");
            // Even a model elsewhere may not replace the working directory.
            var other = ExternalModel(Path.Combine(_dir, "other"));
            AssertOneLineError(CliRunner.Run("compile", other, "-o", ".", "--force"), "working directory");
        }
        finally { Environment.CurrentDirectory = cwd; }
        Assert.That(File.Exists(model) && File.Exists(model + ".data"), Is.True);
    }

    [Test]
    public void Guard_RefusesAFolderHoldingADataFileOrSidecar()
    {
        var data = Path.Combine(_dir, "x", "w.data");
        Directory.CreateDirectory(Path.GetDirectoryName(data)!);
        File.WriteAllText(data, "w");
        var e = Assert.Throws<CompileException>(() => OutputFolder.Guard(Path.Combine(_dir, "x"), [data], "output folder"))!;
        Assert.That(e.Message, Does.Contain("contains the input"));
        Assert.DoesNotThrow(() => OutputFolder.Guard(Path.Combine(_dir, "x", "sub"), [data], "output folder"));
        Assert.Throws<CompileException>(() => OutputFolder.Guard("/", [], "output folder"));
    }

    [Test]
    public void Demo_DoesNotReplaceExistingFolders_WithoutForce()
    {
        var user = Path.Combine(_dir, "original", "mine.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(user)!);
        File.WriteAllText(user, "user data");
        AssertOneLineError(CliRunner.Run("demo", "--out", _dir), "--force");
        Assert.That(File.ReadAllText(user), Is.EqualTo("user data"));
    }

    // ---- 4. races and stale temp folders ----

    [Test]
    public void Compile_IntoAFolderAnotherCompileHolds_FailsAtOnce_AndLosesNothing()
    {
        var model = ExternalModel();
        var outDir = Path.Combine(_dir, "out");
        using (OutputFolder.Claim(outDir))
        {
            var e = Assert.Throws<CompileException>(() => CompileJob.Run(model, outDir, Pipelines.Instantiate(Pipelines.Default)))!;
            Assert.That(e.Message, Does.Contain("being written by another lcc").And.Contain("give another -o"));
            Assert.That(Directory.Exists(outDir), Is.False);
        }
        Assert.That(File.Exists(Path.Combine(_dir, ".out.lock")), Is.False, "the lock file goes with the claim");
        var r = CompileJob.Run(model, outDir, Pipelines.Instantiate(Pipelines.Default));
        Assert.That(File.Exists(r.ModelPath), Is.True);
    }

    [Test]
    public void TwoCompilesRacing_ExactlyOneWins_TheLoserFailsClearly_TheOutputIsIntact()
    {
        var model = ExternalModel();
        var outDir = Path.Combine(_dir, "out");
        for (int round = 0; round < 3; round++)
        {
            if (Directory.Exists(outDir)) Directory.Delete(outDir, true);
            using var go = new ManualResetEventSlim();
            var tasks = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
            {
                go.Wait();
                try { CompileJob.Run(model, outDir, Pipelines.Instantiate(Pipelines.Default)); return (string?)null; }
                catch (CompileException e) { return e.Message; }
            })).ToArray();
            go.Set();
            Assert.That(Task.WaitAll(tasks, Limit), Is.True);
            var errors = tasks.Select(t => t.Result).Where(m => m is not null).ToList();
            Assert.That(errors, Has.Count.EqualTo(1), "exactly one compile wins");
            Assert.That(errors[0], Does.Contain("being written by another lcc").Or.Contain("exists and is not empty"));
            Assert.That(Directory.GetFiles(outDir).Select(Path.GetFileName), Is.SupersetOf(new[] { "model.onnx", "longctx.json" }));
            Assert.DoesNotThrow(() => OnnxReader.Load(Path.Combine(outDir, "model.onnx")));
            Assert.That(Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "m", "out" }), "no temp folders or lock left");
        }
    }

    private static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        int pid = p.Id;
        p.WaitForExit();
        return pid;
    }

    [Test]
    public void StaleTempFolders_OfADeadPid_AreCleanedOnTheNextRun_LiveOnesKept()
    {
        var model = ExternalModel();
        var outDir = Path.Combine(_dir, "out");
        int dead = DeadPid();
        var stale = Path.Combine(_dir, $".out.tmp-{dead}-deadbeef");
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "model.onnx"), "half written");
        var live = Path.Combine(_dir, $".out.tmp-{Environment.ProcessId}-00000000");
        Directory.CreateDirectory(live);
        var r = CompileJob.Run(model, outDir, Pipelines.Instantiate(Pipelines.Default));
        Assert.That(Directory.Exists(stale), Is.False, "a dead compile's temp folder is removed");
        Assert.That(Directory.Exists(live), Is.True, "a live process's temp folder is left alone");
        Assert.That(File.Exists(r.ModelPath), Is.True);
    }

    [Test]
    public void KilledBetweenItsTwoRenames_TheOldOutputIsPutBack()
    {
        var outDir = Path.Combine(_dir, "out");
        var old = Path.Combine(_dir, $".out.old-{DeadPid()}-cafe0001");
        Directory.CreateDirectory(old);
        File.WriteAllText(Path.Combine(old, "model.onnx"), "previous output");
        using (var claim = OutputFolder.Claim(outDir))
            Assert.That(claim.StaleCleaned, Is.EqualTo(1));
        Assert.That(File.ReadAllText(Path.Combine(outDir, "model.onnx")), Is.EqualTo("previous output"));
        Assert.That(Directory.Exists(old), Is.False);
    }
}
