using System.Text.Json;
using System.Text.Json.Nodes;
using LongCtx.Compiler;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Contract;

/// <summary>
/// longctx.json as one typed record (<see cref="LongCtxManifest"/>): what compile writes, what older and newer files
/// load as, and the capabilities compile records, which the runtime trusts instead of probing.
/// </summary>
[TestFixture]
public sealed class ManifestTests
{
    private string _tmp = "", _original = "", _compiled = "";

    [OneTimeSetUp]
    public void Compile()
    {
        _tmp = TestSupport.TempDir("lcc-manifest");
        var demo = Path.Combine(_tmp, "demo");
        DemoModel.WriteTo(demo);
        _original = Path.Combine(demo, LongCtxFiles.Model);
        _compiled = Path.Combine(_tmp, "demo-c");
        CompileJob.Run(_original, _compiled, Pipelines.Instantiate(Pipelines.Default));
    }

    [OneTimeTearDown] public void Cleanup() => Directory.Delete(_tmp, true);

    private string CopyCompiled()
    {
        var dir = Path.Combine(_tmp, "copy-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(_compiled)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Test]
    public void Compile_WritesTheSameTopLevelLayout_AndRecordsCapabilities()
    {
        var text = File.ReadAllText(Path.Combine(_compiled, LongCtxFiles.Manifest));
        var root = JsonNode.Parse(text)!.AsObject();
        // the layout the untyped writer produced (snake_case, nulls omitted), plus the new runtime keys
        Assert.That(root.Select(kv => kv.Key), Is.EqualTo(new[] { "format", "tool", "source", "pipeline", "runtime", "copied" }));
        Assert.That(root["format"]!.GetValue<string>(), Is.EqualTo(LongCtxManifest.CurrentFormat));
        Assert.That(root["source"]!.AsObject().Select(kv => kv.Key), Is.EqualTo(new[] { "path", "sha256", "bytes" }));
        Assert.That(root["pipeline"]![0]!.AsObject().Select(kv => kv.Key), Is.EqualTo(new[] { "pass", "exact", "counts", "notes", "rewrites", "milliseconds", "options" }));
        Assert.That(text, Does.EndWith("}\n"));

        var m = LongCtxManifest.Read(Path.Combine(_compiled, LongCtxFiles.Manifest));
        var caps = m.Runtime.Capabilities!;
        Assert.That((caps.SharedKvBuffer, caps.ChunkedPrefill), Is.EqualTo((true, true)), "the default pipeline rewrites every attention to GroupQueryAttention");
        Assert.That(caps.GroupQueryAttention, Is.EqualTo(DemoModel.Config.Layers));
        Assert.That(m.Runtime.Opsets, Does.ContainKey("com.microsoft"));
        Assert.That(m.Pipeline.Select(p => p.Pass), Does.Contain("canonicalize-attention"));
        Assert.That(m.ToJson(), Is.EqualTo(text), "read then written: byte for byte");
    }

    [Test]
    public void Capabilities_OfTheOriginal_SayWhyNot_AndMatchTheRuntimeNote()
    {
        var caps = RuntimeCapabilityAnalysis.Analyze(OnnxReader.Load(_original));
        Assert.That((caps.SharedKvBuffer, caps.ChunkedPrefill, caps.GroupQueryAttention), Is.EqualTo((false, false, 0)));
        Assert.That(caps.SharedKvBufferWhyNot, Does.Contain("'past_key_values.0.key' is read by").And.Contain("not by one com.microsoft.GroupQueryAttention"));
        using var bare = LongCtxModel.Load(_original, RuntimeFixtures.Cpu());
        Assert.That(bare.KvCacheNote, Does.EndWith($"buffer: {caps.SharedKvBufferWhyNot})"), "bare .onnx: the runtime runs the same check on the same reader");
    }

    [Test]
    public void Runtime_TrustsTheRecord_ForACompiledFolder()
    {
        using (var m = LongCtxModel.Load(_compiled, RuntimeFixtures.Cpu()))
        {
            Assert.That(m.KvCache, Is.EqualTo(KvCacheMode.Shared));
            Assert.That(m.SupportsChunkedPrefill, Is.True);
            Assert.That(m.Manifest!.Runtime.Capabilities, Is.Not.Null);
        }
        // an edited record is believed: the graph could share and chunk, but the record says no
        var dir = CopyCompiled();
        var path = Path.Combine(dir, LongCtxFiles.Manifest);
        var edited = LongCtxManifest.Read(path);
        edited = edited with
        {
            Runtime = edited.Runtime with
            {
                Capabilities = edited.Runtime.Capabilities! with { SharedKvBuffer = false, ChunkedPrefill = false, SharedKvBufferWhyNot = "edited share", ChunkedPrefillWhyNot = "edited chunk" },
            },
        };
        edited.Write(path);
        var log = new List<string>();
        using (var m = LongCtxModel.Load(dir, RuntimeFixtures.Cpu(log)))
        {
            Assert.That(m.KvCache, Is.EqualTo(KvCacheMode.Concat));
            Assert.That(m.KvCacheNote, Does.Contain("edited share"));
            Assert.That(m.SupportsChunkedPrefill, Is.False);
            Assert.That(m.Notes.Single(), Does.Contain("edited chunk").And.Contain("prefill runs in one piece"));
            Assert.That(log, Has.Some.Contains("edited share"), "the graph has GroupQueryAttention: the missing shared buffer is worth a logged note");
        }
        var e = Assert.Throws<RuntimeException>(() => LongCtxModel.Load(dir, RuntimeFixtures.Cpu() with { KvCache = KvCacheMode.Shared }).Dispose())!;
        Assert.That(e.Message, Does.Contain("--kv-cache shared is not possible: edited share"));
    }

    [Test]
    public void UnknownFields_Load_AndAreWrittenBack()
    {
        const string json = """
            {
              "format": "longctx/1",
              "tool": "lcc 9.9.9",
              "from_the_future": {"a": [1, 2]},
              "pipeline": [{"pass": "p", "exact": true, "counts": {"x": 2}, "notes": [], "rewrites": 2, "milliseconds": 1.5, "options": {}, "rule_counts": {"r": 2}}],
              "runtime": {"max_context": 64, "rope": {"method": "rope-yarn"}, "capabilities": {"shared_kv_buffer": true, "chunked_prefill": false, "chunked_prefill_why_not": "x", "group_query_attention": 2, "new_flag": 1}}
            }
            """;
        var m = LongCtxManifest.Parse(json, "test.json");
        Assert.That(m.Tool, Is.EqualTo("lcc 9.9.9"));
        Assert.That(m.Runtime.MaxContext, Is.EqualTo(64));
        Assert.That(m.Runtime.Capabilities, Is.EqualTo(new RuntimeCapabilities(true, false, null, "x", 2)));
        Assert.That(m.Runtime.Other!.Keys, Is.EquivalentTo(new[] { "rope" }));
        Assert.That(m.Unknown!.Keys, Is.EquivalentTo(new[] { "from_the_future" }));
        Assert.That(m.Pipeline[0].Unknown!.Keys, Is.EquivalentTo(new[] { "rule_counts" }));
        var again = JsonNode.Parse(m.ToJson())!;
        Assert.That(again["from_the_future"]!["a"]![1]!.GetValue<int>(), Is.EqualTo(2));
        Assert.That(again["pipeline"]![0]!["rule_counts"]!["r"]!.GetValue<int>(), Is.EqualTo(2));
        Assert.That(again["runtime"]!["rope"]!["method"]!.GetValue<string>(), Is.EqualTo("rope-yarn"));
    }

    [Test]
    public void OlderFile_LoadsWithDefaults()
    {
        var m = LongCtxManifest.Parse("""{"format": "longctx/1"}""", "old.json");
        Assert.That(m.Runtime.IsEmpty, Is.True);
        Assert.That(m.Pipeline, Is.Empty);
        Assert.That(m.Source, Is.Null);
    }

    [TestCase("{not json", "not valid JSON")]
    [TestCase("[1, 2]", "not an object")]
    [TestCase("""{"runtime": 3}""", "\"runtime\" is a JSON number")]
    public void BadFile_IsOneLineNamingTheFile(string json, string what)
    {
        var e = Assert.Throws<ManifestException>(() => LongCtxManifest.Parse(json, "/x/longctx.json"))!;
        Assert.That(e.Message, Does.StartWith("/x/longctx.json: ").And.Contain(what));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void RuntimeSection_FromPassValues_TypesKnownKeys()
    {
        var s = RuntimeSection.FromValues(new Dictionary<string, object?> { ["max_context"] = 65536L, ["rope"] = new Dictionary<string, object?> { ["method"] = "rope-ntk" } });
        Assert.That(s.MaxContext, Is.EqualTo(65536));
        Assert.That(s.Other!["rope"].GetProperty("method").GetString(), Is.EqualTo("rope-ntk"));
    }

    [Test]
    public void SmallTextFiles_AreCapped_SoAnEndlessDeviceIsAnError()
    {
        var dir = Directory.CreateTempSubdirectory("longctx-cap").FullName;
        try
        {
            var big = Path.Combine(dir, "config.json");
            File.WriteAllBytes(big, new byte[LongCtxFiles.SmallTextCap + 1]);
            var e = Assert.Catch<IOException>(() => LongCtxFiles.ReadText(big))!;
            Assert.That(e.Message, Does.Contain("larger than 16 MiB"));
            File.WriteAllText(big, "{\"max_position_embeddings\": 256}");
            Assert.That(LongCtxFiles.ReadText(big), Does.Contain("256"));
            if (File.Exists("/dev/zero"))
            {
                var link = Path.Combine(dir, "longctx.json");
                File.CreateSymbolicLink(link, "/dev/zero");
                Assert.Catch<IOException>(() => LongCtxManifest.Read(link));
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}
