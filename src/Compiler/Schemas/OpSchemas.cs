using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Schemas;

/// <summary>An attribute and the value the operator assumes when it is absent (null: required or no default).</summary>
public sealed record AttrSpec(string Name, AttrKind Kind, object? Default = null);

/// <summary>An input or output slot, by name, and the opset / domain version it appeared in (null: since the op).</summary>
public sealed record SlotSpec(string Name, bool Optional = true, int? Since = null);

/// <summary>
/// The I/O contract of one operator we emit or read: slots by name (their position is the index in the list), the
/// attributes with defaults, and the minimum opset (or domain version). Passes address inputs by name through this
/// (<c>OpSchemas.GroupQueryAttention.Input(node, "cos_cache")</c>), never by a literal index.
/// </summary>
public sealed record OpSchema(string Domain, string OpType, int SinceVersion, IReadOnlyList<SlotSpec> Inputs, IReadOnlyList<SlotSpec> Outputs,
    IReadOnlyList<AttrSpec> Attributes, string Source)
{
    /// <summary>Index of input <paramref name="name"/>; throws for a name the schema lacks (a typo is a bug, not a miss).</summary>
    public int In(string name) => Index(Inputs, name, "input");
    public int Out(string name) => Index(Outputs, name, "output");

    /// <summary>The value at input slot <paramref name="name"/> of <paramref name="n"/> (null when omitted).</summary>
    public Value? Input(Node n, string name) => n.Input(In(name));
    /// <summary>The value at output slot <paramref name="name"/> of <paramref name="n"/> (null when omitted or absent).</summary>
    public Value? Output(Node n, string name) => n.Outputs.ElementAtOrDefault(Out(name));

    /// <summary>An input list with each value at its named slot (omitted slots null, trailing ones dropped).</summary>
    public Value?[] Operands(params (string Slot, Value? Value)[] given)
    {
        var a = new Value?[given.Where(g => g.Value is not null).Select(g => In(g.Slot) + 1).DefaultIfEmpty(0).Max()];
        foreach (var (slot, v) in given) if (v is not null) a[In(slot)] = v;
        return a;
    }

    public AttrSpec Attribute(string name) => Attributes.FirstOrDefault(a => a.Name == name)
        ?? throw new ArgumentException($"{Qualified} has no attribute '{name}' in the schema table");

    /// <summary>Whether <paramref name="n"/> is an application of this operator.</summary>
    public bool Is(Node n) => n.OpType == OpType && n.Domain == Domain;

    public string Qualified => Domain.Length == 0 ? OpType : Domain + "." + OpType;

    private int Index(IReadOnlyList<SlotSpec> slots, string name, string what)
    {
        for (int i = 0; i < slots.Count; i++) if (slots[i].Name == name) return i;
        throw new ArgumentException($"{Qualified} has no {what} '{name}' in the schema table");
    }
}

/// <summary>
/// One table of the ONNX Runtime operators LongCtx emits or reads (STYLE principle 8), and our own longctx ops.
/// Sources: onnxruntime docs/ContribOperators.md (com.microsoft ops, ORT 1.31), onnx docs/Operators.md (Attention and
/// RotaryEmbedding, opset 23; Attention's nonpad_kv_seqlen since 24), custom-ops (longctx ops).
/// It lives in the compiler (it reads IR nodes); the runtime references the compiler and uses the same table.
/// </summary>
public static class OpSchemas
{
    public const string MsDomain = "com.microsoft";
    public const string LongCtxDomain = "longctx";

    private static SlotSpec[] Slots(params string[] names) => names.Select(n => new SlotSpec(n)).ToArray();
    private static AttrSpec Int(string name, long? dflt = null) => new(name, AttrKind.Int, dflt);
    private static AttrSpec Float(string name, float? dflt = null) => new(name, AttrKind.Float, dflt);

    /// <summary>Inputs shared by GroupQueryAttention and our attention ops (the same I/O contract).</summary>
    private static readonly SlotSpec[] GqaInputs =
    [
        new("query", Optional: false), new("key"), new("value"), new("past_key"), new("past_value"),
        new("seqlens_k", Optional: false), new("total_sequence_length", Optional: false), new("cos_cache"), new("sin_cache"),
    ];

    private static readonly AttrSpec[] GqaAttributes =
    [
        Int("num_heads"), Int("kv_num_heads"), Float("scale", 0f), Int("do_rotary", 0), Int("rotary_interleaved", 0),
        Int("local_window_size", -1), Float("softcap", 0f), Int("smooth_softmax", 0),
    ];

    /// <summary>
    /// com.microsoft.GroupQueryAttention (Ainslie et al. 2023): the canonical attention of the compiler.
    /// <para>
    /// Quantized KV cache, as ORT 1.31's CPU kernel really runs it (checked by tests/KvQuant/GqaQuantizedKvTests on a
    /// one-node graph; passes/Kv/QuantizeKvCache emits it): attributes k_quant_type / v_quant_type ("NONE",
    /// "PER_TENSOR", "PER_CHANNEL"; the CPU kernel requires k_quant_type == v_quant_type, else "CPU GroupQueryAttention
    /// requires k_quant_type == v_quant_type") and kv_cache_bit_width (8 or 4; 0 when not quantized); float inputs
    /// k_scale / v_scale (slots 12, 13: shape [1] per tensor, [kv_num_heads, 1, head_size] per channel) are
    /// dequantization scales, x = q * scale, symmetric, no zero point. New keys/values are quantized on write, rounded to
    /// nearest and clamped to [-128, 127] (int8 past/present: int8 [B, Hkv, T, D]) or [-8, 7] (int4: uint8
    /// [B, Hkv, T, D/2], stored offset-binary q + 8, channel 2j in the low nibble, 2j+1 in the high one; probed: a signed
    /// nibble reading is wrong); attention reads the dequantized cache with
    /// an fp32 query (outputs within 1e-5 of attention over q * scale). The shared past/present buffer works as for
    /// float caches (present length = buffer length, new rows written at seqlens_k). Query/key/value and output stay
    /// float32.
    /// </para>
    /// </summary>
    public static readonly OpSchema GroupQueryAttention = new(MsDomain, "GroupQueryAttention", 1,
        [.. GqaInputs, new("position_ids"), new("attention_bias"), new("head_sink"), new("k_scale"), new("v_scale")],
        [new("output", Optional: false), new("present_key"), new("present_value"), new("output_qk")],
        [.. GqaAttributes, Int("qk_output", 0), new("k_quant_type", AttrKind.String, "NONE"), new("v_quant_type", AttrKind.String, "NONE"),
         Int("kv_cache_bit_width", 0)], "onnxruntime ContribOperators.md");

    /// <summary>com.microsoft.RotaryEmbedding: x rotated by cos/sin cache rows gathered at position_ids.</summary>
    public static readonly OpSchema MsRotaryEmbedding = new(MsDomain, "RotaryEmbedding", 1,
        [new("input", Optional: false), new("position_ids", Optional: false), new("cos_cache", Optional: false), new("sin_cache", Optional: false)],
        [new("output", Optional: false)],
        [Int("interleaved", 0), Int("is_packed_batching", 0), Int("num_heads", 0), Int("rotary_embedding_dim", 0), Float("scale", 1f)],
        "onnxruntime ContribOperators.md");

    /// <summary>com.microsoft.MultiHeadAttention (onnxruntime-genai builder, form b).</summary>
    public static readonly OpSchema MultiHeadAttention = new(MsDomain, "MultiHeadAttention", 1,
        [new("query", Optional: false), new("key"), new("value"), new("bias"), new("key_padding_mask"), new("attention_bias"),
         new("past_key"), new("past_value"), new("past_sequence_length"), new("cache_indirection")],
        [new("output", Optional: false), new("present_key"), new("present_value"), new("qk")],
        [Int("num_heads"), Float("mask_filter_value", -10000f), Float("scale", 0f), Int("unidirectional", 0)],
        "onnxruntime ContribOperators.md");

    /// <summary>com.microsoft.SparseAttention (block-sparse GQA, Phi-3-small).</summary>
    public static readonly OpSchema SparseAttention = new(MsDomain, "SparseAttention", 1,
        [new("query", Optional: false), new("key"), new("value"), new("past_key"), new("past_value"),
         new("block_row_indices", Optional: false), new("block_col_indices", Optional: false), new("total_sequence_length", Optional: false),
         new("key_total_sequence_lengths", Optional: false), new("cos_cache"), new("sin_cache")],
        [new("output", Optional: false), new("present_key"), new("present_value")],
        [Int("num_heads"), Int("kv_num_heads"), Float("scale", 0f), Int("sparse_block_size"), Int("do_rotary", 0), Int("rotary_interleaved", 0)],
        "onnxruntime ContribOperators.md");

    /// <summary>
    /// com.microsoft.Attention (onnxruntime.transformers BERT/GPT-2 fusion): packed QKV weights [in, q+k+v] and bias,
    /// mask_index, a packed past [2, B, H, P, D] -> present [2, B, H, P+S, D].
    /// </summary>
    public static readonly OpSchema MsAttention = new(MsDomain, "Attention", 1,
        [new("input", Optional: false), new("weights", Optional: false), new("bias"), new("mask_index"), new("past"), new("attention_bias"),
         new("past_sequence_length")],
        [new("output", Optional: false), new("present")],
        [Int("num_heads"), Int("unidirectional", 0), new("qkv_hidden_sizes", AttrKind.Ints), Int("past_present_share_buffer", 0),
         Int("do_rotary", 0), Int("rotary_embedding_dim", 0), Float("mask_filter_value", -10000f), Float("scale", 0f)],
        "onnxruntime ContribOperators.md");

    /// <summary>ONNX Attention (opset 23; input nonpad_kv_seqlen since 24), form d.</summary>
    public static readonly OpSchema Attention = new("", "Attention", 23,
        [new("Q", Optional: false), new("K", Optional: false), new("V", Optional: false), new("attn_mask"), new("past_key"), new("past_value"),
         new("nonpad_kv_seqlen", Since: 24)],
        [new("Y", Optional: false), new("present_key"), new("present_value"), new("qk_matmul_output")],
        [Int("is_causal", 0), Int("q_num_heads"), Int("kv_num_heads"), Int("qk_matmul_output_mode", 0), Float("scale"), Float("softcap", 0f), Int("softmax_precision")],
        "onnx Operators.md");

    /// <summary>ONNX RotaryEmbedding (opset 23): note the slot order differs from com.microsoft's.</summary>
    public static readonly OpSchema RotaryEmbedding = new("", "RotaryEmbedding", 23,
        [new("X", Optional: false), new("cos_cache", Optional: false), new("sin_cache", Optional: false), new("position_ids")],
        [new("Y", Optional: false)],
        [Int("interleaved", 0), Int("num_heads", 0), Int("rotary_embedding_dim", 0)],
        "onnx Operators.md");

    /// <summary>
    /// longctx.ReferenceAttention: exact attention, the oracle of the custom-ops kernels; the target contract is GQA's
    /// I/O plus the log-sum-exp output (the kernel today reads query..past_value and writes output..present_value).
    /// </summary>
    public static readonly OpSchema ReferenceAttention = new(LongCtxDomain, "ReferenceAttention", 1,
        GqaInputs, [new("output", Optional: false), new("present_key"), new("present_value"), new("lse")], [.. GqaAttributes, Int("causal", 1)],
        "custom-ops ReferenceAttention op");

    /// <summary>
    /// longctx.LongAttention (custom-ops/ort/long_attention_op.h): the long-context attention kernel, GQA's inputs and
    /// outputs plus lse; patterns dense | streaming (sink, window) | dca (chunk_size, local_size, trained_context) |
    /// trishape (sink, window, last, min_len) | vslash (vertical, slash, min_len) | xattn (threshold, stride, min_len) |
    /// block (local_blocks, vert_stride, min_len).
    /// GQA's local_window_size / softcap / smooth_softmax are not attributes of it (the op rejects them).
    /// </summary>
    public static readonly OpSchema LongAttention = new(LongCtxDomain, "LongAttention", 1,
        GqaInputs, [new("output", Optional: false), new("present_key", Optional: false), new("present_value", Optional: false), new("lse")],
        [Int("num_heads"), Int("kv_num_heads"), Float("scale", 0f), Int("do_rotary", 0), Int("rotary_interleaved", 0),
         new("pattern", AttrKind.String, "dense"), Int("sink", 0), Int("window"), Int("chunk_size"), Int("local_size"), Int("trained_context", 0),
         new("isa", AttrKind.String, "auto"),
         // sparse prefill (issue 10): trishape (sink, window, last), vslash (vertical, slash), xattn (threshold, stride), block
         Int("min_len"), Int("last"), Int("vertical"), Int("slash"), Float("threshold", 0.9f), Int("stride"), Int("local_blocks"), Int("vert_stride")],
        "custom-ops LongAttention op");

    /// <summary>
    /// longctx.KiviAttention (custom-ops/ort/kivi_attention_op.cc): attention over a KIVI 2/4-bit cache; past_key /
    /// past_value are the fp32 residual, the quantized store comes as key/value codes (uint8) and params (float32 scale,
    /// zero); cos/sin last. float32 only.
    /// </summary>
    public static readonly OpSchema KiviAttention = new(LongCtxDomain, "KiviAttention", 1,
        [new("query", Optional: false), new("key", Optional: false), new("value", Optional: false), new("past_key", Optional: false), new("past_value", Optional: false),
         new("seqlens_k", Optional: false), new("total_sequence_length", Optional: false), new("key_codes", Optional: false), new("key_params", Optional: false),
         new("value_codes", Optional: false), new("value_params", Optional: false), new("cos_cache"), new("sin_cache")],
        [new("output", Optional: false), new("present_key", Optional: false), new("present_value", Optional: false)],
        [Int("num_heads"), Int("kv_num_heads"), Float("scale", 0f), Int("do_rotary", 0), Int("rotary_interleaved", 0), Int("bits"), Int("group", 32)],
        "custom-ops KiviAttention op");

    public static IReadOnlyList<OpSchema> All { get; } =
        [GroupQueryAttention, MsRotaryEmbedding, MultiHeadAttention, MsAttention, SparseAttention, Attention, RotaryEmbedding, ReferenceAttention, LongAttention, KiviAttention];

    /// <summary>The schema of <paramref name="n"/>'s operator, or null when it is not in the table.</summary>
    public static OpSchema? Of(Node n) => All.FirstOrDefault(s => s.Is(n));
}
