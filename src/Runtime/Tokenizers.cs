using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace LongCtx.Runtime;

/// <summary>Text to token ids and back.</summary>
public interface ITokenizer
{
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
}

/// <summary>An <see cref="ITokenizer"/> over a Microsoft.ML.Tokenizers tokenizer.</summary>
public sealed class MlTokenizer(Tokenizer inner, string source) : ITokenizer
{
    public Tokenizer Inner { get; } = inner;
    public string Source { get; } = source;
    public IReadOnlyList<int> Encode(string text) => Inner.EncodeToIds(text);
    public string Decode(IEnumerable<int> ids) => Inner.Decode(ids);
}

/// <summary>
/// Finds a tokenizer in a model folder: <c>tokenizer.model</c> (SentencePiece, Llama style) or
/// <c>tokenizer.json</c> (Hugging Face) with a byte-level BPE or WordPiece model. Folders without
/// one are id-level models (like recall-public, whose config.json describes the vocabulary).
/// </summary>
public static class Tokenizers
{
    public static ITokenizer? TryLoad(string folder)
    {
        var spm = Path.Combine(folder, LongCtx.Contract.LongCtxFiles.SentencePieceTokenizer);
        if (File.Exists(spm))
        {
            using var s = LongCtx.Contract.SafeFile.OpenRead(spm, folder, 0, TokenizerCap, $"tokenizer {spm}");
            return new MlTokenizer(LlamaTokenizer.Create(s), spm);
        }
        var hf = Path.Combine(folder, LongCtx.Contract.LongCtxFiles.HfTokenizer);
        if (!File.Exists(hf)) return null;
        LongCtx.Contract.SafeFile.Check(hf, folder, 0, TokenizerCap, $"tokenizer {hf}");
        return FromHuggingFaceJson(hf);
    }

    /// <summary>Largest tokenizer file read (tokenizer.json of large-vocabulary models is tens of MiB).</summary>
    public const long TokenizerCap = 512L << 20;

    public static ITokenizer FromHuggingFaceJson(string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(LongCtx.Contract.LongCtxFiles.ReadText(path, TokenizerCap)); }
        catch (JsonException e) { throw new RuntimeException($"{path}: not valid JSON ({e.Message})", e); }
        using var _ = doc;
        // A malformed file (a field of the wrong JSON type, a non-integer id, a duplicate token, a bad regex) fails deep
        // inside System.Text.Json or Microsoft.ML.Tokenizers: one line naming the file instead.
        try { return Build(path, doc.RootElement); }
        catch (Exception e) when (e is not RuntimeException && e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException or OverflowException or IndexOutOfRangeException)
        {
            throw new RuntimeException($"{path}: malformed tokenizer.json ({e.Message.Split('\n')[0].TrimEnd('.')}); fix the file or use token ids (--prompt-ids)", e);
        }
    }

    private static ITokenizer Build(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new RuntimeException($"{path}: the top level is not a JSON object; not a Hugging Face tokenizer.json");
        if (!root.TryGetProperty("model", out var model) || !model.TryGetProperty("type", out var typeEl))
            throw new RuntimeException($"{path}: no model.type; not a Hugging Face tokenizer.json");
        string type = typeEl.GetString() ?? "";
        var vocab = model.TryGetProperty("vocab", out var v) && v.ValueKind == JsonValueKind.Object
            ? v.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32())
            : throw new RuntimeException($"{path}: {type} model without a vocab object");
        switch (type)
        {
            case "BPE" when IsByteLevel(root):
            {
                var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.ValueKind == JsonValueKind.Array
                    ? string.Join(' ', m.EnumerateArray().Select(x => x.GetString())) : m.GetString()!);
                var options = new BpeOptions(vocab)
                {
                    Merges = merges,
                    ByteLevel = true,
                    UnknownToken = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null,
                    SpecialTokens = AddedTokens(root),
                };
                options.PreTokenizer = new RegexPreTokenizer(new System.Text.RegularExpressions.Regex(SplitPattern(root) ?? Gpt2Pattern,
                    System.Text.RegularExpressions.RegexOptions.Compiled), options.SpecialTokens);
                return new MlTokenizer(BpeTokenizer.Create(options), path);
            }
            case "WordPiece":
            {
                var lines = vocab.OrderBy(p => p.Value).Select(p => p.Key);
                using var s = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n"));
                return new MlTokenizer(WordPieceTokenizer.Create(s), path);
            }
            default:
                throw new RuntimeException($"{path}: tokenizer model '{type}'{(type == "BPE" ? " without ByteLevel pre-tokenization" : "")} is not supported; use token ids (--prompt-ids) or add a tokenizer.model (SentencePiece)");
        }
    }

    /// <summary>The GPT-2 pre-tokenization regex (what a plain ByteLevel pre-tokenizer splits on).</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>A Split pre-tokenizer's regex (Llama-3/Qwen style tokenizer.json), if any.</summary>
    private static string? SplitPattern(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pt) || pt.ValueKind != JsonValueKind.Object) return null;
        var stack = new Stack<JsonElement>([pt]);
        while (stack.Count > 0)
        {
            var e = stack.Pop();
            if (e.ValueKind == JsonValueKind.Object)
            {
                if (e.TryGetProperty("type", out var t) && t.GetString() == "Split" && e.TryGetProperty("pattern", out var p)
                    && p.TryGetProperty("Regex", out var r)) return r.GetString();
                foreach (var prop in e.EnumerateObject()) stack.Push(prop.Value);
            }
            else if (e.ValueKind == JsonValueKind.Array) foreach (var x in e.EnumerateArray()) stack.Push(x);
        }
        return null;
    }

    private static Dictionary<string, int>? AddedTokens(JsonElement root)
    {
        if (!root.TryGetProperty("added_tokens", out var a) || a.ValueKind != JsonValueKind.Array) return null;
        var d = a.EnumerateArray().Where(t => t.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True)
            .ToDictionary(t => t.GetProperty("content").GetString()!, t => t.GetProperty("id").GetInt32());
        return d.Count > 0 ? d : null;
    }

    private static bool IsByteLevel(JsonElement root)
    {
        foreach (var key in new[] { "pre_tokenizer", "decoder" })
            if (root.TryGetProperty(key, out var e) && e.ValueKind == JsonValueKind.Object && e.GetRawText().Contains("\"ByteLevel\""))
                return true;
        return false;
    }
}
