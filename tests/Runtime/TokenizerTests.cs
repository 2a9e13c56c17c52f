using System.Text.Json;
using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

[TestFixture]
public sealed class TokenizerTests
{
    private string _tmp = "";
    [SetUp] public void SetUp() => _tmp = Directory.CreateTempSubdirectory("lcc-tok-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_tmp, true);

    [Test]
    public void NoTokenizerFile_IsIdLevel() => Assert.That(Tokenizers.TryLoad(_tmp), Is.Null);

    [Test]
    public void ByteLevelBpeTokenizerJson_EncodesWithMerges_AndRoundTrips()
    {
        // GPT-2 byte-level alphabet: a space is 'Ġ'
        var vocab = new Dictionary<string, int> { ["h"] = 0, ["e"] = 1, ["l"] = 2, ["o"] = 3, ["Ġ"] = 4, ["w"] = 5, ["r"] = 6, ["d"] = 7,
            ["he"] = 8, ["ll"] = 9, ["hell"] = 10, ["hello"] = 11, ["Ġw"] = 12, ["or"] = 13 };
        var json = new
        {
            version = "1.0",
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false },
            decoder = new { type = "ByteLevel" },
            model = new { type = "BPE", vocab, merges = new[] { "h e", "l l", "he ll", "hell o", "Ġ w", "o r" } },
        };
        File.WriteAllText(Path.Combine(_tmp, "tokenizer.json"), JsonSerializer.Serialize(json));
        var tok = Tokenizers.TryLoad(_tmp)!;
        var ids = tok.Encode("hello world");
        Assert.That(ids, Is.EqualTo(new[] { 11, 12, 13, 2, 7 }));
        Assert.That(tok.Decode(ids), Is.EqualTo("hello world"));

        // a model folder with this tokenizer takes text prompts end to end
        File.Copy(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), Path.Combine(_tmp, "model.onnx"));
        using var m = LongCtxModel.Load(_tmp, RuntimeFixtures.Cpu());
        Assert.That(m.Tokenizer, Is.Not.Null);
        var o = Console.Out; var sw = new StringWriter(); Console.SetOut(sw);
        int rc;
        try { rc = LongCtx.Cli.Program.BuildRoot().Parse(["run", _tmp, "--prompt", "hello world", "--max-new-tokens", "3", "--ep", "cpu", "--stop-ids", "255"]).Invoke(); }
        finally { Console.SetOut(o); }
        Assert.That(rc, Is.EqualTo(0));
        using var g = m.CreateGenerator();
        var expected = g.Generate(ids, new GenerationOptions { MaxNewTokens = 3, StopTokens = [255] });
        Assert.That(sw.ToString().TrimEnd('\n'), Is.EqualTo(string.Concat(expected.Select(t => tok.Decode([t])))));
    }

    [Test]
    public void UnsupportedTokenizerJson_IsAClearError()
    {
        File.WriteAllText(Path.Combine(_tmp, "tokenizer.json"), """{"model": {"type": "Unigram", "vocab": {}}}""");
        var e = Assert.Throws<RuntimeException>(() => Tokenizers.TryLoad(_tmp));
        Assert.That(e!.Message, Does.Contain("'Unigram'").And.Contain("not supported"));
    }
}
