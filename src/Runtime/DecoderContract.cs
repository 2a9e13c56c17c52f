using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>How a decoder keeps its attention cache between calls (<see cref="KvLayout"/> as the runtime drives it).</summary>
public enum KvCacheKind
{
    /// <summary>past_key_values.N.key/value [B, Hkv, P, D] in, present.N.key/value [B, Hkv, P+S, D] out.</summary>
    Concat,
    /// <summary>A fixed-size cache key_cache.N [B, L, Hkv*D] updated in place at write_indices (opset-24 TensorScatter).</summary>
    Static,
    /// <summary>past_N [2, B, H, P, D] (key and value stacked) in, present_N [2, B, H, P+S, D] out (com.microsoft.Attention).</summary>
    Packed,
}

/// <summary>One layer's cache tensors: graph input names (past) and the outputs that replace them (present).</summary>
public sealed record KvLayer(int Index, string PastKey, string PastValue, string PresentKey, string PresentValue);

/// <summary>
/// The decoder I/O contract discovered from session metadata: token ids (int64 or int32),
/// optional attention_mask and position_ids, per-layer KV inputs/outputs, logits.
/// </summary>
public sealed partial record DecoderContract(
    string InputIds, TensorElementType InputIdsType,
    string? AttentionMask, TensorElementType AttentionMaskType,
    string? PositionIds, TensorElementType PositionIdsType,
    string Logits, TensorElementType LogitsType, int VocabSize,
    KvCacheKind CacheKind, IReadOnlyList<KvLayer> Layers, TensorElementType KvType, int KvHeads, int HeadDim,
    int? StaticCapacity = null, int? StaticWidth = null, string? WriteIndices = null, string? NonPadKvSeqLen = null)
{
    /// <summary>Bytes per cached token across all layers (K and V).</summary>
    public long KvBytesPerToken => 2L * Layers.Count * KvHeads * HeadDim * ElementSize(KvType);

    public static DecoderContract Discover(string model, IReadOnlyDictionary<string, NodeMetadata> inputs,
        IReadOnlyDictionary<string, NodeMetadata> outputs)
    {
        string? ids = null, mask = null, pos = null, writeIdx = null, nonpad = null;
        var past = new Dictionary<(int, bool), string>();
        var stat = new Dictionary<(int, bool), string>();
        var packed = new Dictionary<int, string>();
        foreach (var name in inputs.Keys)
        {
            if (name == IoNames.InputIds) ids = name;
            else if (name == IoNames.AttentionMask) mask = name;
            else if (name == IoNames.PositionIds) pos = name;
            else if (name == IoNames.WriteIndices) writeIdx = name;
            else if (name == IoNames.NonPadKvSeqLen) nonpad = name;
            else if (name.StartsWith(KvEvictPolicy.IoPrefix, StringComparison.Ordinal)) { } // fed by the evicting KV cache (pass kv-evict)
            else if (name.StartsWith(KiviLayout.IoPrefix, StringComparison.Ordinal)) { } // the quantized store, fed by KiviKvCache (lcc compile --kv kivi*)
            else if (KvNames.Parse(name, KvRole.Past) is { Layout: KvLayout.Packed } pk) packed[pk.Layer] = name;
            else if (KvNames.Parse(name, KvRole.Past) is { } kv) (kv.Layout == KvLayout.Static ? stat : past)[(kv.Layer, kv.Part == KvPart.Key)] = name;
            else
                throw new RuntimeException($"{model}: cannot map model input '{name}' to the decoder contract (expected {IoNames.InputIds}, {IoNames.AttentionMask}, {IoNames.PositionIds}, or a KV cache input named like {KvNames.Describe(KvRole.Past)}; a static key_cache.N also needs {IoNames.WriteIndices})");
        }
        if (ids is null) throw new RuntimeException($"{model}: no '{IoNames.InputIds}' input; not a decoder the runtime can drive");
        var idsType = inputs[ids].ElementDataType;
        if (idsType is not (TensorElementType.Int64 or TensorElementType.Int32))
            throw new RuntimeException($"{model}: input_ids has element type {idsType}; expected int64 or int32");

        var logitsName = outputs.ContainsKey(IoNames.Logits) ? IoNames.Logits
            : throw new RuntimeException($"{model}: no '{IoNames.Logits}' output");
        var logitsMeta = outputs[logitsName];
        int vocab = logitsMeta.Dimensions.Length > 0 ? logitsMeta.Dimensions[^1] : -1;
        if (vocab <= 0) throw new RuntimeException($"{model}: the vocabulary size (last dim of 'logits') is not static");
        if (logitsMeta.ElementDataType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new RuntimeException($"{model}: logits element type {logitsMeta.ElementDataType} is not float32/float16");

        if (packed.Count > 0)
            return DiscoverPacked(model, inputs, outputs, ids, idsType, mask, pos, packed, past.Count + stat.Count > 0 ? past.Values.Concat(stat.Values).First() : null, logitsName, logitsMeta, vocab);
        if (stat.Count > 0)
            return DiscoverStatic(model, inputs, outputs, ids, idsType, pos, writeIdx, nonpad, stat, past, logitsName, logitsMeta, vocab);

        var present = new Dictionary<(int, bool), string>();
        foreach (var name in outputs.Keys)
            if (KvNames.Parse(name, KvRole.Present) is { Layout: KvLayout.Concat } kv) present[(kv.Layer, kv.Part == KvPart.Key)] = name;

        var layers = new List<KvLayer>();
        int nLayers = past.Keys.Select(k => k.Item1 + 1).DefaultIfEmpty(0).Max();
        for (int l = 0; l < nLayers; l++)
        {
            string pk = past.GetValueOrDefault((l, true)) ?? throw new RuntimeException($"{model}: KV input for layer {l} key is missing (have {string.Join(", ", past.Values)})");
            string pv = past.GetValueOrDefault((l, false)) ?? throw new RuntimeException($"{model}: KV input for layer {l} value is missing");
            string ok = present.GetValueOrDefault((l, true)) ?? throw new RuntimeException($"{model}: input '{pk}' has no matching present output ({KvNames.Present.Format(l, KvPart.Key)})");
            string ov = present.GetValueOrDefault((l, false)) ?? throw new RuntimeException($"{model}: input '{pv}' has no matching present output ({KvNames.Present.Format(l, KvPart.Value)})");
            layers.Add(new KvLayer(l, pk, pv, ok, ov));
        }
        if (layers.Count == 0) throw new RuntimeException($"{model}: no KV-cache inputs (past_key_values.N.key/value); the runtime needs a decoder with a cache");

        var first = inputs[layers[0].PastKey];
        if (first.Dimensions.Length != 4)
            throw new RuntimeException($"{model}: KV input '{layers[0].PastKey}' has rank {first.Dimensions.Length}; expected [batch, kv_heads, past, head_dim]");
        int hkv = first.Dimensions[1], d = first.Dimensions[3];
        if (hkv <= 0 || d <= 0)
            throw new RuntimeException($"{model}: KV input '{layers[0].PastKey}' has symbolic heads/head_dim ({string.Join(",", first.SymbolicDimensions)}); cannot size an empty cache");
        var kvType = first.ElementDataType;
        if (kvType is not (TensorElementType.Float or TensorElementType.Float16 or TensorElementType.Int8 or TensorElementType.UInt8))
            throw new RuntimeException($"{model}: KV input '{layers[0].PastKey}' has element type {kvType}; expected float32 or float16 (or int8 / uint8, a cache quantized by lcc compile --kv)");
        foreach (var layer in layers)
            foreach (var n in new[] { layer.PastKey, layer.PastValue })
            {
                var m = inputs[n];
                if (m.Dimensions.Length != 4 || m.Dimensions[1] != hkv || m.Dimensions[3] != d || m.ElementDataType != kvType)
                    throw new RuntimeException($"{model}: KV input '{n}' has shape [{string.Join(",", m.Dimensions)}] {m.ElementDataType}; expected [batch,{hkv},past,{d}] {kvType} like '{layers[0].PastKey}'");
            }

        return new DecoderContract(ids, idsType,
            mask, mask is null ? TensorElementType.Int64 : inputs[mask].ElementDataType,
            pos, pos is null ? TensorElementType.Int64 : inputs[pos].ElementDataType,
            logitsName, logitsMeta.ElementDataType, vocab, KvCacheKind.Concat, layers, kvType, hkv, d);
    }

    private static DecoderContract DiscoverStatic(string model, IReadOnlyDictionary<string, NodeMetadata> inputs,
        IReadOnlyDictionary<string, NodeMetadata> outputs, string ids, TensorElementType idsType, string? pos,
        string? writeIdx, string? nonpad, Dictionary<(int, bool), string> stat, Dictionary<(int, bool), string> past,
        string logitsName, NodeMetadata logitsMeta, int vocab)
    {
        if (past.Count > 0) throw new RuntimeException($"{model}: mixes a static key_cache with past_key_values inputs ('{past.Values.First()}'); cannot map");
        if (writeIdx is null) throw new RuntimeException($"{model}: static cache input '{stat.Values.First()}' needs a 'write_indices' input");
        if (nonpad is null) throw new RuntimeException($"{model}: static cache input '{stat.Values.First()}' needs a 'nonpad_kv_seqlen' input");
        var updated = new Dictionary<(int, bool), string>();
        foreach (var name in outputs.Keys)
            if (KvNames.Parse(name, KvRole.Present) is { Layout: KvLayout.Static } kv) updated[(kv.Layer, kv.Part == KvPart.Key)] = name;
        int n = stat.Keys.Max(k => k.Item1) + 1;
        var layers = new List<KvLayer>();
        for (int l = 0; l < n; l++)
        {
            string k = stat.GetValueOrDefault((l, true)) ?? throw new RuntimeException($"{model}: {KvNames.StaticCache.Format(l, KvPart.Key)} is missing");
            string v = stat.GetValueOrDefault((l, false)) ?? throw new RuntimeException($"{model}: {KvNames.StaticCache.Format(l, KvPart.Value)} is missing");
            layers.Add(new KvLayer(l, k, v,
                updated.GetValueOrDefault((l, true)) ?? throw new RuntimeException($"{model}: input '{k}' has no output {KvNames.StaticUpdated.Format(l, KvPart.Key)}"),
                updated.GetValueOrDefault((l, false)) ?? throw new RuntimeException($"{model}: input '{v}' has no output {KvNames.StaticUpdated.Format(l, KvPart.Value)}")));
        }
        var meta = inputs[layers[0].PastKey];
        if (meta.Dimensions.Length != 3 || meta.Dimensions[1] <= 0 || meta.Dimensions[2] <= 0)
            throw new RuntimeException($"{model}: static cache '{layers[0].PastKey}' has shape [{string.Join(",", meta.Dimensions)}]; expected [batch, capacity, kv_heads*head_dim] with static sizes");
        return new DecoderContract(ids, idsType, null, TensorElementType.Int64,
            pos, pos is null ? TensorElementType.Int64 : inputs[pos].ElementDataType,
            logitsName, logitsMeta.ElementDataType, vocab, KvCacheKind.Static, layers, meta.ElementDataType,
            KvHeads: 1, HeadDim: meta.Dimensions[2], StaticCapacity: meta.Dimensions[1], StaticWidth: meta.Dimensions[2],
            WriteIndices: writeIdx, NonPadKvSeqLen: nonpad);
    }

    /// <summary>The ONNX name of a cache element type, for errors ("float32", "int8", "uint8").</summary>
    public static string TypeName(TensorElementType t) => t switch
    {
        TensorElementType.Float => "float32",
        TensorElementType.Float16 => "float16",
        TensorElementType.Int8 => "int8",
        TensorElementType.UInt8 => "uint8",
        _ => t.ToString().ToLowerInvariant(),
    };

    /// <summary>
    /// Throws when a KV-cache input a caller's <see cref="KvCacheManager"/> supplies (the first 2 x layers values from
    /// <paramref name="from"/>, layer-major) has another element type than the model's cache, e.g. an old caller feeding
    /// fp32 past tensors to a model compiled with <c>--kv int8</c>: one line naming the input and the expected type.
    /// </summary>
    public void CheckKvInputs(string model, IReadOnlyList<string> names, IReadOnlyList<OrtValue> values, int from)
    {
        for (int i = from; i < Math.Min(values.Count, from + 2 * Layers.Count); i++)
        {
            var t = values[i].GetTensorTypeAndShape().ElementDataType;
            if (t != KvType)
                throw new RuntimeException($"{model}: KV input '{names[i]}' is {TypeName(t)} but this model's cache is {TypeName(KvType)}" +
                    (KvType is TensorElementType.Int8 or TensorElementType.UInt8 ? $" (quantized by lcc compile --kv: [1, {KvHeads}, past, {HeadDim}] {TypeName(KvType)})" : "") +
                    "; build the cache with LongCtxModel.CreateCache() or give the model's element type");
        }
    }

    public static int ElementSize(TensorElementType t) => t switch
    {
        TensorElementType.Float16 or TensorElementType.BFloat16 => 2,
        TensorElementType.Float or TensorElementType.Int32 => 4,
        TensorElementType.Int64 or TensorElementType.Double => 8,
        TensorElementType.Int8 or TensorElementType.UInt8 => 1,
        _ => throw new NotSupportedException($"element type {t}"),
    };
}
