using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Kv;

/// <summary>
/// Lowers the canonical <c>com.microsoft.GroupQueryAttention</c> cache to ORT's quantized KV cache (issue 11,
/// <c>lcc compile --kv int8|int4 [--kv-granularity tensor|channel] [--calib SCALES]</c>): static, symmetric,
/// calibrated absmax scales, the scheme of ORT's CPU kernel (see <see cref="OpSchemas.GroupQueryAttention"/>) and of
/// KVQuant's per-channel keys (Hooper et al. 2024, arXiv:2401.18079: key outliers sit in fixed channels, so per-channel
/// scales for keys).
/// <para>
/// With b bits, qmax = 2^(b-1) - 1 (127, 7) and a the calibrated absmax (per layer, K/V, KV head and channel; per
/// tensor: the max of those), scale = a / qmax; the kernel stores q = clamp(round(x / scale), -qmax-1, qmax)
/// and attends over q * scale. Approximate by design (values beyond the calibrated range clip).
/// </para>
/// <code>
///   past_key_values.L.key  f32[B,Hkv,P,D] ──► GroupQueryAttention ──► present.L.key  f32[B,Hkv,T,D]
///   becomes
///   past_key_values.L.key  i8[B,Hkv,P,D]  ──► GroupQueryAttention(k_quant_type=PER_CHANNEL, kv_cache_bit_width=8,
///                                 k_scale.L f32[Hkv,1,D] ──┘   k_scale, v_scale)  ──► present.L.key i8[B,Hkv,T,D]
///   (int4: u8[B,Hkv,P,D/2], two nibbles per byte)
/// </code>
/// Every layer's past key/value must feed one GroupQueryAttention directly (the shared-buffer form); anything else is an
/// error naming the layer. Options: <c>mode</c> int8 | int4, <c>granularity</c> tensor | channel, <c>scales</c> (a file
/// from <c>lcc calibrate --kv</c>), <c>scales-source</c> (how it was made, for the record), <c>rotated</c> (set by the
/// Hadamard rotation pass). Records <c>runtime.kv_quant</c> (<see cref="KvQuantization"/>).
/// </summary>
public sealed class QuantizeKvCache : IPass
{
    public string Name => "quantize-kv";
    public string Description => "quantize the GroupQueryAttention KV cache to int8 / int4 with calibrated static scales (approximate)";
    public bool IsExact => false;

    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention;

    /// <summary>The option values, checked.</summary>
    public sealed record Settings(int Bits, bool PerChannel, string ScalesPath, string? ScalesSource, bool Rotated)
    {
        public string Mode => Bits == 8 ? "int8" : "int4";
        public string QuantType => PerChannel ? "PER_CHANNEL" : "PER_TENSOR";
        public ElementType Element => Bits == 8 ? ElementType.Int8 : ElementType.UInt8;
        public int Qmax => (1 << (Bits - 1)) - 1;

        public static Settings Parse(IReadOnlyDictionary<string, string> o)
        {
            int bits = o.GetValueOrDefault("mode", "int8") switch
            {
                "int8" => 8,
                "int4" => 4,
                var m => throw new CompileException($"--kv {m}: unknown mode; valid: int8, int4, int4:rotate"),
            };
            bool channel = o.GetValueOrDefault("granularity", "channel") switch
            {
                "channel" => true,
                "tensor" => false,
                var g => throw new CompileException($"--kv-granularity {g}: unknown; valid: tensor, channel"),
            };
            string scales = o.GetValueOrDefault("scales") ?? throw new CompileException("quantize-kv needs a scale file (option scales=FILE, from lcc calibrate MODEL --kv)");
            return new Settings(bits, channel, scales, o.GetValueOrDefault("scales-source"), o.GetValueOrDefault("rotated") == "true");
        }
    }

    public void Run(Model model, PassContext ctx)
    {
        var s = Settings.Parse(ctx.Options);
        var g = model.Graph;
        var (layers, problem) = RuntimeCapabilityAnalysis.Layers(g);
        if (problem is not null) throw new CompileException($"{model.DisplayName}: --kv: {problem}");
        if (layers.Count == 0) throw new CompileException($"{model.DisplayName}: --kv: the model has no KV-cache inputs ({KvNames.Describe(KvRole.Past)}); only a decoder with a cache can quantize it");
        var sites = layers.Select(l => Site(model, l)).ToList();
        int hkv = sites[0].KvHeads, d = sites[0].HeadDim;
        if (sites.FirstOrDefault(x => x.KvHeads != hkv || x.HeadDim != d) is { } odd)
            throw new CompileException($"{model.DisplayName}: --kv: layer {odd.Layer.Layer} has {odd.KvHeads} KV heads x {odd.HeadDim} channels, layer 0 {hkv} x {d}; one cache geometry is needed");
        if (s.Bits == 4 && d % 2 != 0)
            throw new CompileException($"{model.DisplayName}: --kv int4: head_dim {d} is odd; int4 packs two channels per byte and needs an even head_dim (use --kv int8)");
        KvScaleFile file;
        try
        {
            file = KvScaleFile.Read(s.ScalesPath);
            file.CheckFits(s.ScalesPath, model.DisplayName, layers.Count, hkv, d);
        }
        catch (KvScaleException e) { throw new CompileException(e.Message); }

        if (file.Rotated != s.Rotated)
            throw new CompileException($"scale file {s.ScalesPath} was calibrated on a{(file.Rotated ? " Hadamard-rotated" : "n unrotated")} cache but {model.DisplayName} is compiled {(s.Rotated ? "with" : "without")} :rotate; " +
                (s.Rotated ? "drop --calib (lcc compile --kv ...:rotate calibrates the rotated model itself)" : "calibrate the model without :rotate"));
        foreach (var site in sites)
        {
            var cal = file.Layers[site.Layer.Layer];
            var kScale = AddScale(ctx, g, $"k_scale.{site.Layer.Layer}", cal.Key, s, hkv, d);
            var vScale = AddScale(ctx, g, $"v_scale.{site.Layer.Layer}", cal.Value, s, hkv, d);
            var n = site.Node;
            ctx.Rewriter.SetAttribute(n, Attr.String("k_quant_type", s.QuantType));
            ctx.Rewriter.SetAttribute(n, Attr.String("v_quant_type", s.QuantType));
            ctx.Rewriter.SetAttribute(n, Attr.Int("kv_cache_bit_width", s.Bits));
            ctx.Rewriter.SetInput(n, Gqa.In("k_scale"), kScale);
            ctx.Rewriter.SetInput(n, Gqa.In("v_scale"), vScale);
            foreach (var v in new[] { site.Layer.PastKey, site.Layer.PastValue, site.Layer.PresentKey, site.Layer.PresentValue })
                ctx.Rewriter.SetType(v, CacheType(v.Type!, s, d));
            ctx.Count($"layers quantized to {s.Mode} per {(s.PerChannel ? "channel" : "tensor")}");
        }
        if (file.Model.Sha256 != ModelSha(model))
            ctx.Note($"scale file {s.ScalesPath} was calibrated on {file.Model.Path} (sha256 {file.Model.Sha256[..Math.Min(12, file.Model.Sha256.Length)]}…), another file with this model's cache geometry");
        ctx.Note($"scales: {s.ScalesSource ?? s.ScalesPath} ({file.Samples} prompts, {file.Tokens} tokens of {file.Data})");
        int stored = s.Bits == 4 ? d / 2 : d;
        long scaleBytes = 2L * layers.Count * (s.PerChannel ? hkv * d : 1) * sizeof(float);
        ctx.RuntimeConfig["kv_quant"] = new Dictionary<string, object?>
        {
            ["mode"] = s.Mode, ["granularity"] = s.PerChannel ? "channel" : "tensor", ["element_type"] = s.Element.ShortName(),
            ["head_dim"] = d, ["stored_head_dim"] = stored, ["rotated"] = s.Rotated, ["scales"] = s.ScalesSource ?? s.ScalesPath, ["scale_bytes"] = scaleBytes,
        };
    }

    private sealed record QuantSite(KvLayerValues Layer, Node Node, int KvHeads, int HeadDim);

    /// <summary>The GroupQueryAttention reading the layer's past inputs directly, with its cache geometry.</summary>
    private static QuantSite Site(Model model, KvLayerValues layer)
    {
        string where = $"{model.DisplayName}: --kv: layer {layer.Layer}";
        if (RuntimeCapabilityAnalysis.WhyNotShared(model.Graph) is { } why && layer.Layer == 0)
            throw new CompileException($"{where}: the cache is not read by com.microsoft.GroupQueryAttention directly ({why}); run canonicalize-attention (the default pipeline) and do not lower attention with --attention");
        var n = layer.PastKey.Uses[0].Node;
        if (!Gqa.Is(n))
            throw new CompileException($"{where}: the cache is read by {n.QualifiedOp}; quantized KV runs on com.microsoft.GroupQueryAttention only (drop --attention)");
        if (n.StringAttr("k_quant_type", "NONE") != "NONE")
            throw new CompileException($"{where}: the cache is already quantized ({n.StringAttr("k_quant_type", "")}, {n.IntAttr("kv_cache_bit_width", 0)} bits)");
        if (Gqa.Input(n, "query")?.Type?.Element is { } qe && qe != ElementType.Float)
            throw new CompileException($"{where}: the attention computes in {qe.ShortName()}; ORT's quantized KV cache on CPU needs float32 query/key/value");
        var shape = layer.PastKey.Type?.Shape;
        if (shape is not { Rank: 4 } || shape[1].Value is not long h || shape[3].Value is not long d)
            throw new CompileException($"{where}: past key '{layer.PastKey.Name}' has shape {shape?.ToString() ?? "?"}; need [batch, kv_heads, past, head_dim] with static heads and head_dim");
        return new QuantSite(layer, n, (int)h, (int)d);
    }

    /// <summary>Dequantization scale = absmax / qmax: [Hkv, 1, D] per channel, [1] per tensor (a zero absmax gets 1, any code decodes to ~0).</summary>
    private static Value AddScale(PassContext ctx, Graph g, string name, float[][] absmax, Settings s, int hkv, int d)
    {
        static float Scale(float a, int qmax) => a > 0 ? a / qmax : 1f;
        if (!s.PerChannel)
            return ctx.Rewriter.AddInitializer(g, name, Tensor.FromFloats([Scale(absmax.Max(r => r.Max()), s.Qmax)], 1));
        var data = new float[hkv * d];
        for (int h = 0; h < hkv; h++) for (int j = 0; j < d; j++) data[h * d + j] = Scale(absmax[h][j], s.Qmax);
        return ctx.Rewriter.AddInitializer(g, name, Tensor.FromFloats(data, hkv, 1, d));
    }

    private static TensorType CacheType(TensorType t, Settings s, int d) =>
        new(s.Element, t.Shape is { Rank: 4 } sh ? new Shape(sh[0], sh[1], sh[2], Dim.Of(s.Bits == 4 ? d / 2 : d)) : null);

    /// <summary>The SHA-256 a scale file records for this model (<see cref="CompileJob.HashSource"/>; empty when in memory).</summary>
    private static string ModelSha(Model model) => model.SourcePath is { } p && File.Exists(p) ? CompileJob.HashSource(model, p).Sha256 : "";
}
