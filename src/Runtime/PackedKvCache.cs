using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

public sealed partial record DecoderContract
{
    /// <summary>
    /// The packed contract of onnxruntime.transformers GPT-2 (<see cref="KvNames.PackedPast"/>): past_N [2, B, H, P, D]
    /// in, present_N [2, B, H, P+S, D] out. Each <see cref="KvLayer"/> names the one tensor as both key and value.
    /// </summary>
    private static DecoderContract DiscoverPacked(string model, IReadOnlyDictionary<string, NodeMetadata> inputs,
        IReadOnlyDictionary<string, NodeMetadata> outputs, string ids, TensorElementType idsType, string? mask, string? pos,
        Dictionary<int, string> packed, string? otherKv, string logitsName, NodeMetadata logitsMeta, int vocab)
    {
        if (otherKv is not null) throw new RuntimeException($"{model}: mixes a packed past_N cache with '{otherKv}'; cannot map");
        var present = new Dictionary<int, string>();
        foreach (var name in outputs.Keys)
            if (KvNames.Parse(name, KvRole.Present) is { Layout: KvLayout.Packed } kv) present[kv.Layer] = name;
        int n = packed.Keys.Max() + 1;
        if (n > packed.Count) throw new RuntimeException($"{model}: packed cache input {KvNames.PackedPast.Format(Enumerable.Range(0, n).First(l => !packed.ContainsKey(l)), KvPart.Key)} is missing (have {string.Join(", ", packed.Values)})");
        var layers = new List<KvLayer>();
        for (int l = 0; l < n; l++)
        {
            string p = packed[l];
            string o = present.GetValueOrDefault(l) ?? throw new RuntimeException($"{model}: input '{p}' has no matching output {KvNames.PackedPresent.Format(l, KvPart.Key)}");
            layers.Add(new KvLayer(l, p, p, o, o));
        }
        var first = inputs[layers[0].PastKey];
        if (first.Dimensions.Length != 5 || first.Dimensions[0] != 2 || first.Dimensions[2] <= 0 || first.Dimensions[4] <= 0)
            throw new RuntimeException($"{model}: packed cache '{layers[0].PastKey}' has shape [{string.Join(",", first.Dimensions)}]; expected [2, batch, heads, past, head_dim] with static heads and head_dim");
        int h = first.Dimensions[2], d = first.Dimensions[4];
        var kvType = first.ElementDataType;
        if (kvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new RuntimeException($"{model}: packed cache '{layers[0].PastKey}' has element type {kvType}; expected float32 or float16");
        foreach (var layer in layers)
        {
            var m = inputs[layer.PastKey];
            if (m.Dimensions.Length != 5 || m.Dimensions[2] != h || m.Dimensions[4] != d || m.ElementDataType != kvType)
                throw new RuntimeException($"{model}: packed cache '{layer.PastKey}' has shape [{string.Join(",", m.Dimensions)}] {m.ElementDataType}; expected [2,batch,{h},past,{d}] {kvType} like '{layers[0].PastKey}'");
        }
        return new DecoderContract(ids, idsType,
            mask, mask is null ? TensorElementType.Int64 : inputs[mask].ElementDataType,
            pos, pos is null ? TensorElementType.Int64 : inputs[pos].ElementDataType,
            logitsName, logitsMeta.ElementDataType, vocab, KvCacheKind.Packed, layers, kvType, h, d);
    }
}

/// <summary>
/// The packed cache of com.microsoft.Attention: one tensor per layer, past_N [2, 1, H, P, D] (key then value) in,
/// present_N [2, 1, H, P+S, D] out; the present tensor becomes the next past. Grows without bound, like the concat cache.
/// </summary>
public sealed class PackedKvCache : KvCacheManager
{
    private readonly OrtValue?[] _tensors;
    private int _length;

    public PackedKvCache(DecoderContract contract) : base(contract)
    {
        if (contract.CacheKind != KvCacheKind.Packed) throw new ArgumentException($"a packed cache needs a packed contract, not {contract.CacheKind}");
        _tensors = new OrtValue?[contract.Layers.Count];
    }

    public override int Length => _length;
    public override int? Capacity => null;
    public override long Bytes => _tensors.Sum(t => t is null ? 0 : t.GetTensorSizeInBytes());

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        var c = Contract;
        for (int l = 0; l < c.Layers.Count; l++)
        {
            var t = _tensors[l];
            if (t is null)
            {
                t = Zeros(c.KvType, [2, 1, c.KvHeads, 0, c.HeadDim]);
                owned.Add(t);
            }
            names.Add(c.Layers[l].PastKey);
            values.Add(t);
        }
    }

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        if (outputs.Count != _tensors.Length || shape.Length != 5 || shape[0] != 2 || shape[3] != _length + newTokens)
        {
            foreach (var o in outputs) o.Dispose();
            throw new RuntimeException($"present_0 has shape [{string.Join(",", shape)}]; expected [2,1,{Contract.KvHeads},{_length + newTokens},{Contract.HeadDim}] (past {_length} + {newTokens} new)");
        }
        for (int i = 0; i < _tensors.Length; i++)
        {
            _tensors[i]?.Dispose();
            _tensors[i] = outputs[i];
        }
        _length += newTokens;
    }

    public override void Clear()
    {
        for (int i = 0; i < _tensors.Length; i++) { _tensors[i]?.Dispose(); _tensors[i] = null; }
        _length = 0;
    }

    protected override void Dispose(bool disposing) => Clear();
}
