using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>
/// The KV manager of a KIVI-compiled model (<c>lcc compile --kv kivi2|kivi4</c>, longctx.json <c>runtime.kivi</c>,
/// <see cref="KiviLayout"/>): owns, per layer, the fp32 residual (fed as <c>past_key_values.L.*</c>, returned grown by the
/// step's tokens as <c>present.L.*</c>) and the quantized store (<c>kivi.L.key_codes</c> ... fed, never written by the
/// graph). After every step it folds the residual as KIVI does (Liu et al. 2024, section 3.3: tokens leave the
/// full-precision window in whole groups): while the residual holds at least R + G tokens, its oldest G tokens are
/// quantized (<see cref="KiviCodec"/>, keys per channel, values per token) and appended to the store. So the residual
/// holds every token below R + G, and R..R+G-1 tokens afterwards; the store a multiple of G.
/// </summary>
public sealed class KiviKvCache : KvCacheManager
{
    private readonly KiviLayout _k;
    private readonly string _model;
    private readonly Layer[] _layers;
    private int _quantized, _residual;

    /// <summary>One layer's store ([1, Hkv, Pq, ...] arrays, head-major) and its fp32 residual.</summary>
    private sealed class Layer
    {
        public byte[] KeyCodes = [], ValueCodes = [];
        public float[] KeyParams = [], ValueParams = [];
        public OrtValue? Key, Value;
    }

    public KiviKvCache(DecoderContract contract, string model, KiviLayout layout) : base(contract)
    {
        if (layout.HeadDim != contract.HeadDim || layout.KvHeads != contract.KvHeads || layout.Layers != contract.Layers.Count)
            throw new RuntimeException($"{model}: longctx.json runtime.kivi says {layout.Layers} layers x {layout.KvHeads} KV heads x {layout.HeadDim} channels but the graph has {contract.Layers.Count} x {contract.KvHeads} x {contract.HeadDim}; recompile the model");
        _k = layout;
        _model = model;
        _layers = Enumerable.Range(0, contract.Layers.Count).Select(_ => new Layer()).ToArray();
    }

    public override int Length => _quantized + _residual;

    /// <summary>Tokens in the quantized store (a multiple of the group size).</summary>
    public int QuantizedLength => _quantized;

    /// <summary>Tokens in the fp32 residual.</summary>
    public int ResidualLength => _residual;

    public override int? Capacity => null;

    public override long Bytes => _layers.Sum(l => (long)l.KeyCodes.Length + l.ValueCodes.Length + 4L * (l.KeyParams.Length + l.ValueParams.Length)
        + (l.Key?.GetTensorSizeInBytes() ?? 0) + (l.Value?.GetTensorSizeInBytes() ?? 0));

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        var c = Contract;
        int hkv = c.KvHeads, d = c.HeadDim, g = _k.Group, rb = _k.CodeBytes, pq = _quantized;
        OrtValue Own(OrtValue v) { owned.Add(v); return v; }
        OrtValue Bytes(byte[] a, long[] shape) => Own(a.Length == 0 ? Zeros(TensorElementType.UInt8, shape) : OrtValue.CreateTensorValueFromMemory(a, shape));
        OrtValue Floats(float[] a, long[] shape) => Own(a.Length == 0 ? Zeros(TensorElementType.Float, shape) : OrtValue.CreateTensorValueFromMemory(a, shape));
        for (int l = 0; l < _layers.Length; l++) // the fp32 residuals first, layer-major (the generator type-checks these)
        {
            names.Add(c.Layers[l].PastKey); values.Add(_layers[l].Key ?? Own(Zeros(TensorElementType.Float, [1, hkv, 0, d])));
            names.Add(c.Layers[l].PastValue); values.Add(_layers[l].Value ?? Own(Zeros(TensorElementType.Float, [1, hkv, 0, d])));
        }
        for (int l = 0; l < _layers.Length; l++)
        {
            var s = _layers[l];
            names.Add(KiviLayout.KeyCodes(l)); values.Add(Bytes(s.KeyCodes, [1, hkv, pq, rb]));
            names.Add(KiviLayout.KeyParams(l)); values.Add(Floats(s.KeyParams, [1, hkv, pq / g, 2, d]));
            names.Add(KiviLayout.ValueCodes(l)); values.Add(Bytes(s.ValueCodes, [1, hkv, pq, rb]));
            names.Add(KiviLayout.ValueParams(l)); values.Add(Floats(s.ValueParams, [1, hkv, pq, 2, d / g]));
        }
    }

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        int expect = _residual + newTokens;
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        if (shape.Length != 4 || shape[2] != expect)
        {
            foreach (var o in outputs) o.Dispose();
            throw new RuntimeException($"{_model}: present key of layer 0 has shape [{string.Join(",", shape)}]; expected the KIVI residual [1,{Contract.KvHeads},{expect},{Contract.HeadDim}] ({_residual} + {newTokens} new)");
        }
        var (fold, _) = _k.Split(expect);
        for (int l = 0; l < _layers.Length; l++)
        {
            var s = _layers[l];
            s.Key?.Dispose(); s.Value?.Dispose();
            (s.Key, s.Value) = (outputs[2 * l], outputs[2 * l + 1]);
            if (fold > 0) Fold(s, (int)fold, expect);
        }
        _quantized += (int)fold;
        _residual = expect - (int)fold;
    }

    /// <summary>Quantizes the oldest <paramref name="fold"/> residual tokens of every head onto the store and keeps the rest as the residual.</summary>
    private void Fold(Layer s, int fold, int rows)
    {
        int hkv = Contract.KvHeads, d = Contract.HeadDim, g = _k.Group, rb = _k.CodeBytes, bits = _k.Bits, pq = _quantized, pn = pq + fold;
        var kc = new byte[hkv * pn * rb]; var vc = new byte[kc.Length];
        var kp = new float[hkv * pn / g * 2 * d]; var vp = new float[hkv * pn * 2 * (d / g)];
        var keys = s.Key!.GetTensorDataAsSpan<float>();
        var vals = s.Value!.GetTensorDataAsSpan<float>();
        var restK = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [1, hkv, rows - fold, d]);
        var restV = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [1, hkv, rows - fold, d]);
        var rk = restK.GetTensorMutableDataAsSpan<float>();
        var rv = restV.GetTensorMutableDataAsSpan<float>();
        for (int h = 0; h < hkv; h++)
        {
            // the old store of head h, then the new groups
            s.KeyCodes.AsSpan(h * pq * rb, pq * rb).CopyTo(kc.AsSpan(h * pn * rb));
            s.ValueCodes.AsSpan(h * pq * rb, pq * rb).CopyTo(vc.AsSpan(h * pn * rb));
            s.KeyParams.AsSpan(h * pq / g * 2 * d, pq / g * 2 * d).CopyTo(kp.AsSpan(h * pn / g * 2 * d));
            s.ValueParams.AsSpan(h * pq * 2 * (d / g), pq * 2 * (d / g)).CopyTo(vp.AsSpan(h * pn * 2 * (d / g)));
            var hk = keys.Slice(h * rows * d, rows * d);
            var hv = vals.Slice(h * rows * d, rows * d);
            KiviCodec.QuantizeKeys(hk[..(fold * d)], fold, d, bits, g, kc.AsSpan((h * pn + pq) * rb, fold * rb), kp.AsSpan((h * pn / g + pq / g) * 2 * d, fold / g * 2 * d));
            KiviCodec.QuantizeValues(hv[..(fold * d)], fold, d, bits, g, vc.AsSpan((h * pn + pq) * rb, fold * rb), vp.AsSpan((h * pn + pq) * 2 * (d / g), fold * 2 * (d / g)));
            hk[(fold * d)..].CopyTo(rk.Slice(h * (rows - fold) * d));
            hv[(fold * d)..].CopyTo(rv.Slice(h * (rows - fold) * d));
        }
        s.Key.Dispose(); s.Value.Dispose();
        (s.Key, s.Value) = (restK, restV);
        (s.KeyCodes, s.ValueCodes, s.KeyParams, s.ValueParams) = (kc, vc, kp, vp);
    }

    public override void Clear()
    {
        foreach (var s in _layers)
        {
            s.Key?.Dispose(); s.Value?.Dispose();
            s.Key = s.Value = null;
            s.KeyCodes = s.ValueCodes = [];
            s.KeyParams = s.ValueParams = [];
        }
        _quantized = _residual = 0;
    }

    protected override void Dispose(bool disposing) => Clear();
}
