using LongCtx.Compiler;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Kv;

/// <summary>
/// Rotates every canonical GroupQueryAttention's keys, queries and values per head by the normalized Sylvester Hadamard
/// matrix H (D x D, H = H^T, H H = I), so that outliers spread over all channels before the cache is quantized
/// (<c>--kv int4:rotate</c>; QuaRot, Ashkboos et al. 2024, arXiv:2404.00456; SpinQuant, Liu et al. 2024). Exact in real
/// arithmetic; in float32 the logits move by rounding only (tests: &lt;= 1e-5 with no quantization).
/// <para>
/// Keys and queries are rotated after RoPE: per head q' = R(p) q H and k' = R(p) k H, so q' k'^T = R q H H^T k^T R^T =
/// q k^T (rotated by position as before). H does not commute with the RoPE rotation R(p), so RoPE leaves the op: the pass
/// applies it with com.microsoft.RotaryEmbedding (same cos/sin caches, interleave and partial rotary dim, at the model's
/// positions GroupQueryAttention itself derives, seqlens_k + 1 - S + i) and sets do_rotary = 0.
/// Values cost nothing at run time: v' = v H is folded into v_proj (W_v's per-KV-head column blocks times H, and its
/// bias), so attention returns o' = o H per query head, and H is undone in o_proj (W_o's per-query-head row blocks:
/// o' (H W_o) = o W_o).
/// </para>
/// <code>
///   q ──────────────────────────────┐                     q ─ RotaryEmbedding ─ Reshape ─ MatMul(H) ─ Reshape ─┐
///   k ──────────────────────────────┼─ GQA(do_rotary=1)   k ─ RotaryEmbedding ─ Reshape ─ MatMul(H) ─ Reshape ─┼─ GQA(do_rotary=0)
///   x ─ MatMul(W_v) ────────────────┘  ─ MatMul(W_o)  ==> x ─ MatMul(W_v H) ───────────────────────────────────┘  ─ MatMul(H W_o)
/// </code>
/// Needs: float32, head_dim a power of two, unpacked q/k/v, do_rotary = 1 with cos/sin caches, v produced by MatMul with a constant weight (optionally + constant bias) and the attention output read only by
/// a MatMul with a constant weight. Anything else is an error naming the layer.
/// </summary>
public sealed class HadamardRotateKv : IPass
{
    public string Name => "hadamard-kv";
    public string Description => "rotate queries/keys (after RoPE) and values (folded into v_proj/o_proj) per head by a Hadamard matrix (exact)";
    public bool IsExact => true;

    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention, Rope = OpSchemas.MsRotaryEmbedding;

    public void Run(Model model, PassContext ctx)
    {
        var g = model.Graph;
        var rw = ctx.Rewriter;
        var (layers, problem) = RuntimeCapabilityAnalysis.Layers(g);
        if (problem is not null) throw new CompileException($"{model.DisplayName}: --kv :rotate: {problem}");
        var positionsOf = new Dictionary<Value, Value>(); // per seqlens_k value (all layers share one in practice)
        var hadamard = new Dictionary<int, Value>();
        var tables = new HashSet<Value>();
        foreach (var layer in layers)
        {
            string where = $"{model.DisplayName}: --kv :rotate: layer {layer.Layer}";
            var n = layer.PastKey.Uses.Count == 1 && Gqa.Is(layer.PastKey.Uses[0].Node) ? layer.PastKey.Uses[0].Node
                : throw new CompileException($"{where}: the cache is not read by one com.microsoft.GroupQueryAttention (run the default pipeline; no --attention)");
            if (n.IntAttr("do_rotary", 0) != 1 || Gqa.Input(n, "cos_cache") is not { } cos || Gqa.Input(n, "sin_cache") is not { } sin)
                throw new CompileException($"{where}: GroupQueryAttention does not apply RoPE itself (do_rotary=1 with cos/sin caches); nothing to rotate after");
            if (Gqa.Input(n, "key") is not { } key || Gqa.Input(n, "value") is not { } value)
                throw new CompileException($"{where}: packed QKV (no separate key/value inputs) is not supported");
            var query = Gqa.Input(n, "query")!;
            if (query.Type?.Element is { } e && e != ElementType.Float)
                throw new CompileException($"{where}: the attention computes in {e.ShortName()}; the rotation is implemented for float32");
            int hq = (int)n.IntAttr("num_heads", 0), hkv = (int)n.IntAttr("kv_num_heads", 0);
            if (layer.PastKey.Type?.Shape is not { Rank: 4 } ps || ps[3].Value is not long dl)
                throw new CompileException($"{where}: past key '{layer.PastKey.Name}' has no static head_dim");
            int d = (int)dl;
            if (d < 2 || (d & (d - 1)) != 0)
                throw new CompileException($"{where}: head_dim {d} is not a power of two (the Sylvester Hadamard matrix needs one); use --kv int4 without :rotate");
            long? rotary = cos.Type?.Shape is { Rank: 2 } cs && cs[1].Value is long half ? 2 * half : null;
            tables.Add(cos); tables.Add(sin);
            var (vWeight, vBias) = ValueProjection(value, where);
            var oMatMul = OutputProjection(Gqa.Output(n, "output")!, where);
            var seqlens = Gqa.Input(n, "seqlens_k")!;
            var positions = positionsOf.TryGetValue(seqlens, out var pv) ? pv : positionsOf[seqlens] = Positions(rw, g, n, query, seqlens);
            var h = hadamard.TryGetValue(d, out var hv) ? hv : hadamard[d] = rw.AddInitializer(g, $"hadamard_{d}", Tensor.FromFloats(Sylvester(d), d, d));

            var attrs = (int heads) => new List<Attr> { Attr.Int("interleaved", n.IntAttr("rotary_interleaved", 0)), Attr.Int("num_heads", heads) }
                .Concat(rotary is long r && r < d ? [Attr.Int("rotary_embedding_dim", r)] : []).ToList();
            Value RotateAfterRope(Value x, int heads, string name)
            {
                var roped = rw.Op(g, Rope.OpType, Rope.Operands(("input", x), ("position_ids", positions), ("cos_cache", cos), ("sin_cache", sin)),
                    attrs(heads), OpSchemas.MsDomain, $"{name}_rope", before: n);
                var split = rw.Op(g, "Reshape", [roped, rw.AddInitializer(g, $"{name}_heads_shape", Tensor.FromInt64s([0, 0, heads, d], 4))], outputName: $"{name}_heads", before: n);
                var turned = rw.Op(g, "MatMul", [split, h], outputName: $"{name}_hadamard", before: n);
                return rw.Op(g, "Reshape", [turned, rw.AddInitializer(g, $"{name}_merge_shape", Tensor.FromInt64s([0, 0, (long)heads * d], 3))], outputName: $"{name}_rotated", before: n);
            }
            rw.SetInput(n, Gqa.In("query"), RotateAfterRope(query, hq, $"layer{layer.Layer}_q"));
            rw.SetInput(n, Gqa.In("key"), RotateAfterRope(key, hkv, $"layer{layer.Layer}_k"));
            rw.SetAttribute(n, Attr.Int("do_rotary", 0));
            rw.SetInput(n, Gqa.In("cos_cache"), null);
            rw.SetInput(n, Gqa.In("sin_cache"), null);

            // values: v' = v H per KV head, in W_v's columns (and the bias); undone in W_o's rows per query head
            Fold(rw, g, vWeight.Node, vWeight.Slot, w => RotateColumns(w, d));
            if (vBias is { } b) Fold(rw, g, b.Node, b.Slot, w => RotateColumns(w, d));
            Fold(rw, g, oMatMul, 1, w => RotateRows(w, d));
            ctx.Count("attention layers rotated");
        }
        foreach (var v in tables.Where(v => v.IsInitializer && !v.IsUsed)) rw.RemoveInitializer(v); // read by no RotaryEmbedding: gone
        ctx.Note("RoPE moved out of GroupQueryAttention into com.microsoft.RotaryEmbedding at the op's own positions (seqlens_k + 1 - S + i)");
    }

    /// <summary>
    /// The positions GroupQueryAttention rotates by, as an int64 [B, S] value: past_b + i with past_b = seqlens_k[b] + 1 - S
    /// (S = the query's sequence length), so the moved RoPE needs no position_ids input and is exact for chunks after a past.
    /// </summary>
    private static Value Positions(Rewriter rw, Graph g, Node before, Value query, Value seqlens)
    {
        Value I64(string name, params long[] v) => rw.AddInitializer(g, name, Tensor.FromInt64s(v, v.Length));
        Value Op(string op, Value?[] inputs, string name, params Attr[] attrs) => rw.Op(g, op, inputs, attrs, outputName: name, before: before);
        var shape = Op("Shape", [query], "rope_query_shape");
        var s = Op("Gather", [shape, rw.AddInitializer(g, "rope_seq_axis", Tensor.Scalar(1L))], "rope_seq_len", Attr.Int("axis", 0));
        var k = Op("Cast", [seqlens], "rope_seqlens_i64", Attr.Int("to", (long)ElementType.Int64));
        var past = Op("Sub", [Op("Add", [k, I64("rope_one", 1)], "rope_total"), s], "rope_past");
        var steps = Op("Range", [rw.AddInitializer(g, "rope_zero", Tensor.Scalar(0L)), s, rw.AddInitializer(g, "rope_step", Tensor.Scalar(1L))], "rope_steps");
        return Op("Add", [Op("Unsqueeze", [past, I64("rope_batch_axes", 1)], "rope_past_b1"), steps], "rope_positions");
    }

    /// <summary>Where v comes from: MatMul(x, W) [+ bias], W and bias constant. Returns (node, slot) of each constant.</summary>
    private static ((Node Node, int Slot) Weight, (Node Node, int Slot)? Bias) ValueProjection(Value v, string where)
    {
        var p = v.Producer;
        (Node, int)? bias = null;
        if (p is { OpType: "Add", Domain: "" } && p.Inputs.Count == 2)
        {
            int c = p.Inputs[1]!.IsInitializer ? 1 : p.Inputs[0]!.IsInitializer ? 0 : -1;
            if (c >= 0 && p.Inputs[c]!.Const!.Dims.Length == 1) { bias = (p, c); p = p.Inputs[1 - c]!.Producer; }
        }
        if (p is not { OpType: "MatMul", Domain: "" } || p.Inputs[1] is not { IsInitializer: true } w || w.Const!.Dims.Length != 2)
            throw new CompileException($"{where}: the value input is not MatMul(x, constant W_v) [+ constant bias]; cannot fold the value rotation into v_proj");
        return ((p, 1), bias);
    }

    /// <summary>The MatMul(attention output, constant W_o) that reads the output (its only reader).</summary>
    private static Node OutputProjection(Value output, string where)
    {
        if (output.Uses.Count != 1 || output.IsGraphOutput || output.Uses[0] is not { Index: 0, Node: { OpType: "MatMul", Domain: "" } m }
            || m.Inputs[1] is not { IsInitializer: true } w || w.Const!.Dims.Length != 2)
            throw new CompileException($"{where}: the attention output is not read only by MatMul(output, constant W_o); cannot undo the value rotation in o_proj");
        return m;
    }

    /// <summary>Replaces the constant at (node, slot) by f(data): in place when nothing else reads it, else as a new initializer.</summary>
    private static void Fold(Rewriter rw, Graph g, Node node, int slot, Func<Tensor, Tensor> f)
    {
        var c = node.Inputs[slot]!;
        var data = f(c.Const!);
        if (c.Uses.Count == 1 && !c.IsGraphOutput && !c.IsGraphInput) rw.SetInitializerData(c, data);
        else rw.SetInput(node, slot, rw.AddInitializer(g, c.Name + "_hadamard", data));
    }

    /// <summary>[.., N] with N = heads x d: each d-wide block of every row times H (x_h H).</summary>
    internal static Tensor RotateColumns(Tensor w, int d)
    {
        var a = w.ToFloats();
        int n = (int)w.Dims[^1];
        if (n % d != 0) throw new CompileException($"v_proj width {n} is not a multiple of head_dim {d}");
        var h = Sylvester(d);
        var r = new float[a.Length];
        var row = new double[d];
        for (int i = 0; i < a.Length / n; i++)
            for (int blk = 0; blk < n / d; blk++)
            {
                int o = i * n + blk * d;
                for (int j = 0; j < d; j++)
                {
                    double s = 0;
                    for (int k = 0; k < d; k++) s += a[o + k] * (double)h[k * d + j];
                    row[j] = s;
                }
                for (int j = 0; j < d; j++) r[o + j] = (float)row[j];
            }
        return Tensor.FromFloats(r, [.. w.Dims]);
    }

    /// <summary>[heads x d, M]: each d-row block left-multiplied by H (H W_h).</summary>
    internal static Tensor RotateRows(Tensor w, int d)
    {
        var a = w.ToFloats();
        int rows = (int)w.Dims[0], m = (int)w.Dims[1];
        if (rows % d != 0) throw new CompileException($"o_proj input width {rows} is not a multiple of head_dim {d}");
        var h = Sylvester(d);
        var r = new float[a.Length];
        for (int blk = 0; blk < rows / d; blk++)
            for (int i = 0; i < d; i++)
                for (int c = 0; c < m; c++)
                {
                    double s = 0;
                    for (int k = 0; k < d; k++) s += h[i * d + k] * (double)a[(blk * d + k) * m + c];
                    r[(blk * d + i) * m + c] = (float)s;
                }
        return Tensor.FromFloats(r, [.. w.Dims]);
    }

    /// <summary>The normalized Sylvester Hadamard matrix of order d (a power of two): H_2n = [[H, H], [H, -H]] / sqrt 2.</summary>
    public static float[] Sylvester(int d)
    {
        var h = new float[d * d];
        float s = 1f / MathF.Sqrt(d);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                h[i * d + j] = (System.Numerics.BitOperations.PopCount((uint)(i & j)) & 1) == 0 ? s : -s;
        return h;
    }
}
