namespace LongCtx.Contract;

/// <summary>The files of a folder written by <c>lcc compile</c> and read by the runtime.</summary>
public static class LongCtxFiles
{
    /// <summary>The compiled graph.</summary>
    public const string Model = "model.onnx";
    /// <summary>Its external data (initializers above the --external-threshold): the model file name + ".data".</summary>
    public const string ModelData = Model + ".data";
    /// <summary>What lcc did and what the runtime needs to know (<see cref="LongCtxManifest"/>).</summary>
    public const string Manifest = "longctx.json";
    /// <summary>Hugging Face model config (trained context, heads, rope_theta), copied from the source folder.</summary>
    public const string Config = "config.json";

    /// <summary>SentencePiece tokenizer (Llama style); the runtime tries it first.</summary>
    public const string SentencePieceTokenizer = "tokenizer.model";
    /// <summary>Hugging Face tokenizers file (byte-level BPE or WordPiece).</summary>
    public const string HfTokenizer = "tokenizer.json";

    /// <summary>Tokenizer files and their companions, copied by compile.</summary>
    public static IReadOnlyList<string> TokenizerFiles { get; } =
        [HfTokenizer, "tokenizer_config.json", SentencePieceTokenizer, "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt"];

    /// <summary>Files that describe the model rather than its graph: they travel with the compiled model so that the
    /// runtime finds the tokenizer and tools find the trained context (config.json) in the output folder too.</summary>
    public static IReadOnlyList<string> Sidecars { get; } =
        [Config, "generation_config.json", .. TokenizerFiles, "genai_config.json"];

    /// <summary>Cap for the small JSON files lcc reads (config.json, longctx.json).</summary>
    public const long SmallTextCap = 16L << 20;

    /// <summary>
    /// Reads a UTF-8 text file of at most <paramref name="cap"/> bytes through <see cref="SafeFile"/>: only a regular file
    /// is opened (a FIFO or /dev/zero, directly or through a symlink, is a one-line error, never opened), and no more than
    /// cap bytes are read.
    /// </summary>
    public static string ReadText(string path, long cap = SmallTextCap) => SafeFile.ReadText(path, cap);
}

/// <summary>Keys lcc writes into an ONNX model's metadata_props.</summary>
public static class MetadataKeys
{
    /// <summary>Written by canonicalize-attention when it replaces a model's RoPE tables by longer ones: the rows the
    /// original tables had (the trained context).</summary>
    public const string OriginalMaxPositions = "longctx.original_max_positions";
    /// <summary>Written by a RoPE scaling pass ("method context=N trained=M"); guards against scaling twice.</summary>
    public const string RopeApplied = "longctx.rope";
}
