namespace LongCtx.Runtime;

/// <summary>Text to token ids and back.</summary>
public interface ITokenizer
{
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
}

/// <summary>Finds a tokenizer in a model folder.</summary>
public static class Tokenizers
{
    /// <summary>Returns a tokenizer when <paramref name="folder"/> has one the runtime can read; null for id-level models.</summary>
    public static ITokenizer? TryLoad(string folder) => null;
}
