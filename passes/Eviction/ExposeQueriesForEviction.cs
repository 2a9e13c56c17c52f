using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// Pass <c>kv-evict</c> (issue 12): what the runtime needs to score cached keys for KV eviction (SnapKV, Li et al. 2024,
/// arXiv:2404.14469; PyramidKV, Cai et al. 2024, arXiv:2406.02069; H2O, Zhang et al. 2023, arXiv:2306.14048). Every
/// eviction method ranks key j by the attention mass a set of queries gives it,
/// <code>  score_j = sum over the observing rows i and the query heads of j's KV group of softmax_j(scale · R(p_i) q_i · k_j)  </code>
/// where k_j is the cached (already rotated) key. The ONNX attention ops do not output probabilities, so the pass makes
/// each layer's query (the op's input 0, [B, S, H*D], before the op's own RoPE) a graph output
/// <c>longctx_evict_query.L</c> through an Identity, and records in longctx.json <c>runtime.kv_evict</c> the method and,
/// per layer, the output, the cache input it pairs with, heads, scale and the RoPE the op applies (angle per position of
/// each rotated pair and the cos/sin magnitude, read off the op's cos/sin cache rows 1 and 0), so the runtime rotates
/// the observing queries exactly as the op does and recomputes W x T x D dot products (cheap next to prefill).
/// <code>
///   q ──► GroupQueryAttention / LongAttention(dense)      q ──► GroupQueryAttention / LongAttention(dense)
///                                                  ==>    └──► Identity ──► longctx_evict_query.L (graph output)
/// </code>
/// pyramidkv and actqkv (layers keep different budgets; ActQKV, Xiao et al. 2025, arXiv:2502.13542) also give each attention its own seqlens_k graph input
/// <c>longctx_evict_seqlens_k.L</c>, fed by the runtime; adakv (heads of a layer hold different lengths; AdaKV, Feng et
/// al. 2024, arXiv:2407.11550) adds both that and an attention_bias input per layer (<see cref="AdaKvBias"/>); lemo
/// (token elimination during chunked prefill, after LeMo, arXiv:2501.09767) the seqlens_k inputs. The graph's computation is unchanged (exact); eviction itself happens in the runtime's KV manager. Refused with a
/// one-line error: a layer whose attention was not recognised (named), a block that is not canonical GroupQueryAttention
/// or dense LongAttention (streaming / dca cache un-rotated or remapped keys: naming the pattern and the method), packed QKV.
/// </summary>
public sealed class ExposeQueriesForEviction : IPass
{
    public string Name => "kv-evict";
    public string Description => "expose each layer's attention query and record the KV eviction policy (snapkv, pyramidkv, h2o, actqkv, adakv, lemo) the runtime applies";
    public bool IsExact => true;

    /// <summary>Prefix of the graph outputs this pass adds (layer number appended).</summary>
    public const string QueryOutputPrefix = KvEvictPolicy.IoPrefix + "query.";

    /// <summary>Prefix of the per-layer seqlens_k inputs pyramidkv adds (layers hold different lengths).</summary>
    public const string SeqlensInputPrefix = KvEvictPolicy.IoPrefix + "seqlens_k.";

    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention, La = OpSchemas.LongAttention;

    public void Run(Model model, PassContext ctx)
    {
        var s = KvEvictSettings.Parse(ctx.Options);
        var found = AttentionDiscovery.Discover(model);
        if (found.Unrecognised.Count > 0)
            throw new CompileException($"{model.DisplayName}: --kv-evict {s.Method}: attention not recognised at {found.Unrecognised[0]}; eviction scores every layer's attention, so the model cannot evict");
        if (found.Blocks.Count == 0)
            throw new CompileException($"{model.DisplayName}: --kv-evict {s.Method}: the model has no attention blocks to score");
        var layers = new List<Dictionary<string, object?>>();
        foreach (var b in found.Blocks)
        {
            var n = b.Match.Anchor;
            var record = LayerRecord(b, QueryOutputPrefix + b.Layer.ToString(CultureInfo.InvariantCulture), $"{model.DisplayName}: --kv-evict {s.Method}: layer {b.Layer}", $"--kv-evict {s.Method}");
            var q = Gqa.Input(n, "query")!;
            var g = n.Graph;
            if (s.Method is "pyramidkv" or "actqkv" or "adakv" or "lemo")
            {
                // layers keep different budgets, so each attention reads its own valid length (GQA / LongAttention
                // seqlens_k is per batch row: [B] int32 = rows held - 1); total_sequence_length stays the longest
                var own = ctx.Rewriter.AddInput(g, SeqlensInputPrefix + b.Layer.ToString(CultureInfo.InvariantCulture), new TensorType(ElementType.Int32, new Shape(Dim.Sym("batch_size"))));
                ctx.Rewriter.SetInput(n, Gqa.In("seqlens_k"), own);
                record["seqlens"] = own.Name;
                ctx.Count("per-layer seqlens_k inputs");
            }
            if (s.Ada) record["bias"] = AdaKvBias.Add(b, ctx, $"{model.DisplayName}: --kv-evict {s.Method}{(s.Method == "adakv" ? "" : ":ada=1")}: layer {b.Layer}").Name;
            var exposed = ctx.Rewriter.Op(g, "Identity", [q], outputName: (string)record["query"]!);
            ctx.Rewriter.AddOutput(g, exposed);
            ctx.Count("attention queries exposed");
            layers.Add(record);
        }
        var policy = new Dictionary<string, object?>
        {
            ["method"] = s.Method, ["budget"] = s.Budget, ["window"] = s.Window, ["pool"] = s.Pool, ["beta"] = s.Beta,
            ["heavy"] = s.Heavy, ["recent"] = s.Recent, ["layers"] = layers,
        };
        if (s.Method == "actqkv") policy["mass"] = s.Mass;
        if (s.Ada) policy["floor"] = s.Floor;
        if (s.Method == "lemo") policy["tau"] = s.Tau;
        ctx.RuntimeConfig[KvEvictPolicy.Key] = policy;
        ctx.Note($"{s}: the runtime compacts the KV cache " + (s.Method == "h2o" ? "at every decode step" : s.Method == "lemo" ? "before each further prompt chunk and after each prompt" : "after each prompt"));
    }

    /// <summary>
    /// What the runtime needs to score one layer's keys (<see cref="KvEvictLayer"/>), checked: canonical GroupQueryAttention
    /// or dense LongAttention, separate q/k/v, the cache a graph input, constant cos/sin caches when the op rotates.
    /// <paramref name="where"/> starts each error, <paramref name="option"/> names the user's option.
    /// </summary>
    internal static Dictionary<string, object?> LayerRecord(AttentionBlock b, string queryName, string where, string option)
    {
        var n = b.Match.Anchor;
        if (La.Is(n) && n.StringAttr("pattern", "dense") is var pattern && pattern != "dense")
            throw new CompileException($"{where} runs --attention {pattern}, which cannot combine with {option} ({pattern} caches keys by cache position, scoring and eviction need rotated keys at their own positions); use --attention dense or drop one of the two");
        if (!Gqa.Is(n) && !La.Is(n))
            throw new CompileException($"{where} is {b.Form} attention, not canonical GroupQueryAttention; {option} needs the canonical form (canonicalize-attention kept it)");
        if (Gqa.Input(n, "key") is null)
            throw new CompileException($"{where} has packed QKV (no separate key input); {option} needs the query alone");
        if (Gqa.Input(n, "past_key") is not { IsGraphInput: true } past)
            throw new CompileException($"{where}: past_key is not a graph input; {option} reads the cache the runtime feeds");
        var record = new Dictionary<string, object?>
        {
            ["layer"] = b.Layer,
            ["query"] = queryName,
            ["past_key"] = past.Name,
            ["heads"] = b.NumHeads,
            ["kv_heads"] = b.KvNumHeads,
            ["head_dim"] = b.HeadDim,
            ["scale"] = n.FloatAttr("scale", 0) is var sc && sc != 0 ? sc : 1 / Math.Sqrt(b.HeadDim),
            ["rotary_dim"] = 0,
            ["interleaved"] = false,
            ["rope_factor"] = 1.0,
        };
        if (n.IntAttr("do_rotary", 0) == 1)
        {
            var (invFreq, factor) = Angles(Gqa.Input(n, "cos_cache"), Gqa.Input(n, "sin_cache"))
                ?? throw new CompileException($"{where}: the cos/sin caches are not constant [max_positions >= 2, rotary_dim/2] tensors; {option} must rotate queries as the op does");
            record["rotary_dim"] = invFreq.Length * 2;
            record["interleaved"] = n.IntAttr("rotary_interleaved", 0) == 1;
            record["inv_freq"] = invFreq;
            record["rope_factor"] = factor;
        }
        return record;
    }

    /// <summary>Per rotated pair, the angle per position (row 1 of the caches) and the caches' magnitude (row 0: cos 0 = factor).</summary>
    private static (double[] InvFreq, double Factor)? Angles(Value? cosV, Value? sinV)
    {
        if (cosV?.Const is not { Dims.Length: 2 } cos || sinV?.Const is not { Dims.Length: 2 } sin || cos.Dims[0] < 2 || !cos.Dims.SequenceEqual(sin.Dims)) return null;
        int half = (int)cos.Dims[1];
        // rows 0 and 1 are all that is needed; ToFloats reads the whole table once (small next to the weights)
        float[] c = cos.ToFloats(), sn = sin.ToFloats();
        double factor = c[0];
        if (!(factor > 0)) return null;
        var inv = new double[half];
        for (int i = 0; i < half; i++) inv[i] = Math.Atan2(sn[half + i], c[half + i]);
        return (inv, factor);
    }
}
