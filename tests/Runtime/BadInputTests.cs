using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>Every user mistake is one clear error naming the model and the numbers/names involved.</summary>
[TestFixture]
public sealed class BadInputTests
{
    private string _tmp = "";

    [SetUp] public void SetUp() => _tmp = Directory.CreateTempSubdirectory("lcc-rt-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_tmp, true);

    [Test]
    public void PromptLongerThanStaticCache_NamesBothNumbers()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.Static24);
        Assert.That(model.MaxContext, Is.EqualTo(16));
        using var g = model.CreateGenerator();
        var e = Assert.Throws<ArgumentException>(() => g.Generate(Enumerable.Range(5, 17).ToArray()));
        Assert.That(e!.Message, Does.Contain("17").And.Contain("16").And.Contain("opset24-attention-static-cache"));
        // a prompt that fits but whose generation would overflow stops with ContextFull
        var toks = g.Generate(Enumerable.Range(5, 14).ToArray(), new GenerationOptions { MaxNewTokens = 10 });
        Assert.That(toks, Has.Count.EqualTo(3));
        Assert.That(g.LastFinishReason, Is.EqualTo(FinishReason.ContextFull));
    }

    [Test]
    public void TokenOutsideVocabulary_NamesIdAndVocab()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        using var g = model.CreateGenerator();
        var e = Assert.Throws<ArgumentException>(() => g.Generate([1, 5, 256, 7]));
        Assert.That(e!.Message, Does.Contain("token id 256 at position 2").And.Contain("[0, 256)"));
        Assert.Throws<ArgumentException>(() => g.Generate([-1]));
        var late = Enumerable.Range(1, 40).Append(999).ToArray();
        Assert.That(Assert.Throws<ArgumentException>(() => g.Prefill(late, chunk: 8))!.Message, Does.Contain("token id 999 at position 40"));
        Assert.That(g.Length, Is.EqualTo(0), "a rejected prompt leaves the cache untouched, even when the bad id is in a later chunk");
    }

    [Test]
    public void UnmappableKvInput_IsNamed()
    {
        var path = RuntimeFixtures.WriteTinyModel(_tmp, "kv_blob_3");
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(path, RuntimeFixtures.Cpu()));
        Assert.That(e!.Message, Does.Contain("'kv_blob_3'").And.Contain("cannot map"));
    }

    [Test]
    public void KvWithoutPresentOutput_IsNamed()
    {
        var path = RuntimeFixtures.WriteTinyModel(_tmp, "past_key_values.0.key");
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(path, RuntimeFixtures.Cpu()));
        Assert.That(e!.Message, Does.Contain("layer 0 value is missing"));
    }

    [Test]
    public void MissingCustomOpLibrary_IsNamed()
    {
        var path = RuntimeFixtures.WriteTinyModel(_tmp, "past_key_values.0.key", customDomain: "longctx");
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(path, RuntimeFixtures.Cpu() with { CustomOpsLibrary = "/nonexistent/liblongctx_ops.so" }));
        Assert.That(e!.Message, Does.Contain("liblongctx_ops.so").And.Contain("/nonexistent/").And.Contain("domain 'longctx'"));
    }

    [Test]
    public void DefaultCustomOpLibrary_IsRegistered_WhenBuilt()
    {
        var lib = LongCtxModel.DefaultCustomOpsLibrary();
        if (!File.Exists(lib)) Assert.Ignore($"custom-op library not built: {lib}");
        var path = RuntimeFixtures.WriteTinyModel(_tmp, "past_key_values.0.key", customDomain: "longctx");
        // registration and session creation succeed; what fails is only the (deliberately incomplete) KV contract
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(path, RuntimeFixtures.Cpu()));
        Assert.That(e!.Message, Does.Contain("layer 0 value is missing"));
    }

    [Test]
    public void ModelWithoutCustomDomain_DoesNotNeedTheLibrary()
    {
        using var model = LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel),
            RuntimeFixtures.Cpu() with { CustomOpsLibrary = "/nonexistent/liblongctx_ops.so" });
        Assert.That(model.Opsets.ContainsKey("longctx"), Is.False);
    }

    /// <summary>Without -v, auto on a machine without GPU providers says nothing about TensorRT or CUDA.</summary>
    [Test]
    public void Auto_WithoutVerbose_SaysNothingAboutMissingGpuProviders()
    {
        var log = new List<string>();
        var tried = new List<ExecutionProviderKind>();
        using var m = LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), WithoutGpus(log, tried, verbose: false));
        Assert.That(m.Provider, Is.EqualTo(ExecutionProviderKind.Cpu));
        Assert.That(tried, Has.Count.EqualTo(3), "still tries TensorRT and CUDA first");
        Assert.That(log, Has.None.Contain("TensorRT").And.None.Contain("CUDA"));
    }

    [TestCase(ExecutionProviderKind.Cuda, "CUDA")]
    [TestCase(ExecutionProviderKind.TensorRT, "TensorRT")]
    public void ForcedGpuProvider_FailsClearly_WhenUnavailable(ExecutionProviderKind ep, string name)
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        LongCtxModel? m = null;
        try { m = LongCtxModel.Load(RuntimeFixtures.RecallModel, RuntimeFixtures.Cpu() with { ExecutionProvider = ep }); }
        catch (RuntimeException e)
        {
            Assert.That(e.Message, Does.Contain($"execution provider {name} is not available").And.Contain("recall-public"));
            return;
        }
        using (m) Assert.That(m.Provider, Is.EqualTo(ep), "a GPU machine: the forced provider loaded");
    }

    /// <summary>A provider setup whose GPU providers are missing on any machine (like a host without CUDA libraries).</summary>
    private static RuntimeOptions WithoutGpus(List<string> log, List<ExecutionProviderKind> tried, bool verbose = true) => RuntimeFixtures.Cpu(log) with
    {
        ExecutionProvider = ExecutionProviderKind.Auto,
        Verbose = verbose,
        ProviderSetup = (_, ep, device) =>
        {
            lock (tried) tried.Add(ep);
            if (ep == ExecutionProviderKind.Cpu) return;
            throw new ExecutionProviderUnavailableException($"[ErrorCode:Fail] Failed to load shared library libonnxruntime_providers_{ep.ToString().ToLowerInvariant()}.so (device {device})\nsecond line of detail");
        },
    };

    [Test]
    public void Auto_FallsBackWithOneLinePerProvider()
    {
        var log = new List<string>();
        var tried = new List<ExecutionProviderKind>();
        using var m = LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), WithoutGpus(log, tried));
        Assert.That(m.Provider, Is.EqualTo(ExecutionProviderKind.Cpu));
        Assert.That(tried, Is.EqualTo(new[] { ExecutionProviderKind.TensorRT, ExecutionProviderKind.Cuda, ExecutionProviderKind.Cpu }), "the fallback chain");
        Assert.That(log, Has.Count.EqualTo(2));
        Assert.That(log[0], Does.StartWith("ep: TensorRT unavailable (Failed to load shared library libonnxruntime_providers_tensorrt.so (device 0): its CUDA libraries or device are missing)")
            .And.EndWith("; falling back to CUDA"));
        Assert.That(log[1], Does.StartWith("ep: CUDA unavailable (Failed to load shared library libonnxruntime_providers_cuda.so").And.EndWith("; falling back to CPU"));
        Assert.That(log, Has.All.Not.Contain("\n").And.All.Not.Contain("second line").And.All.Not.Contain("[ErrorCode"));
        using var g = m.CreateGenerator();
        Assert.That(g.Generate([1, 2, 3], new GenerationOptions { MaxNewTokens = 2 }), Has.Count.EqualTo(2), "the CPU session it fell back to runs");
    }

    [TestCase(ExecutionProviderKind.Cuda, "CUDA")]
    [TestCase(ExecutionProviderKind.TensorRT, "TensorRT")]
    public void ForcedProvider_Missing_FailsWithoutFallingBack(ExecutionProviderKind ep, string name)
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var log = new List<string>();
        var tried = new List<ExecutionProviderKind>();
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(model, WithoutGpus(log, tried) with { ExecutionProvider = ep }).Dispose())!;
        Assert.That(e.Message, Does.Contain($"execution provider {name} is not available").And.Contain("recall-public").And.Contain("use --ep cpu or --ep auto"));
        Assert.That(tried, Is.EqualTo(new[] { ep }), "a forced provider is the whole chain");
        Assert.That(log, Is.Empty);
    }

    [Test]
    public void CompiledFolder_ReadsRuntimeSection_AndEnforcesMaxContext()
    {
        File.Copy(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), Path.Combine(_tmp, "model.onnx"));
        File.WriteAllText(Path.Combine(_tmp, "longctx.json"), """{"format": "longctx/1", "runtime": {"max_context": 20, "note": "x"}}""");
        using var m = LongCtxModel.Load(_tmp, RuntimeFixtures.Cpu());
        Assert.That(m.MaxContext, Is.EqualTo(20));
        Assert.That(m.Runtime.MaxContext, Is.EqualTo(20), "read typed");
        Assert.That(m.Runtime.Other?.Keys, Is.EquivalentTo(new[] { "note" }), "keys this version does not know still load");
        Assert.That(m.Runtime.Capabilities, Is.Null, "a hand-written longctx.json records no capabilities: the runtime probes");
        using var g = m.CreateGenerator();
        var e = Assert.Throws<ArgumentException>(() => g.Generate(Enumerable.Range(1, 21).ToArray()));
        Assert.That(e!.Message, Does.Contain("21").And.Contain("at most 20"));

        File.WriteAllText(Path.Combine(_tmp, "longctx.json"), """{"format": "longctx/1"}""");
        using var m2 = LongCtxModel.Load(_tmp, RuntimeFixtures.Cpu());
        Assert.That(m2.MaxContext, Is.Null);
        Assert.That(m2.Runtime.IsEmpty, Is.True);
    }

    [Test]
    public void MissingModel_AndFolderWithoutModel()
    {
        Assert.That(Assert.Throws<RuntimeException>(() => LongCtxModel.Load(Path.Combine(_tmp, "nope.onnx")))!.Message, Does.Contain("not found"));
        Assert.That(Assert.Throws<RuntimeException>(() => LongCtxModel.Load(_tmp))!.Message, Does.Contain("has no model.onnx"));
        File.WriteAllText(Path.Combine(_tmp, "model.onnx"), "not a model");
        Assert.Throws<RuntimeException>(() => LongCtxModel.Load(_tmp, RuntimeFixtures.Cpu()));
    }
}
