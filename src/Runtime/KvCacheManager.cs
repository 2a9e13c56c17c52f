using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>
/// Owns one sequence's attention cache between decoder calls: supplies the cache inputs for a step
/// and takes ownership of the cache outputs that replace them. The generator loop only talks to
/// this class, so other cache policies (quantized, evicting, sinks) plug in as further subclasses.
/// Not thread-safe: one manager per generator.
/// </summary>
public abstract class KvCacheManager : IDisposable
{
    protected KvCacheManager(DecoderContract contract) => Contract = contract;

    public DecoderContract Contract { get; }

    /// <summary>Tokens held in the cache.</summary>
    public abstract int Length { get; }

    /// <summary>
    /// Absolute position of the next token (position_ids). Equals <see cref="Length"/> for caches
    /// that keep every token; an evicting cache (sinks, sliding window) keeps counting while Length stays bounded.
    /// </summary>
    public virtual int NextPosition => Length;

    /// <summary>Most tokens one call may add (an evicting cache's headroom), or null when any call that fits is fine.</summary>
    public virtual int? MaxStep => null;

    /// <summary>Called before a step's inputs are built, so an evicting cache can make room (and shrink <see cref="Length"/>, which sizes the attention mask).</summary>
    public virtual void Reserve(int newTokens) { }

    /// <summary>Called when a prompt has been prefilled (before decoding starts): an evicting cache compresses here.</summary>
    public virtual void EndOfPrompt() { }

    /// <summary>Most tokens the cache can hold, or null when it grows without bound.</summary>
    public abstract int? Capacity { get; }

    /// <summary>Bytes of cache tensors currently held (all layers, K and V).</summary>
    public abstract long Bytes { get; }

    /// <summary>
    /// For caches bound as both past and present (IOBinding): the present outputs are views of the cache's own
    /// buffers, already updated in place by the kernel; disposes them and checks each is [1, Hkv, <paramref name="bufferLength"/>, D].
    /// </summary>
    protected void DisposeInPlaceOutputs(IReadOnlyList<Microsoft.ML.OnnxRuntime.OrtValue> outputs, int bufferLength, string model, string what)
    {
        foreach (var o in outputs)
        {
            var shape = o.GetTensorTypeAndShape().Shape;
            o.Dispose();
            if (shape.Length != 4 || shape[2] != bufferLength)
                throw new RuntimeException($"{model}: present KV output has shape [{string.Join(",", shape)}]; expected the {what} [1,{Contract.KvHeads},{bufferLength},{Contract.HeadDim}]");
        }
    }

    /// <summary>Graph outputs that carry the updated cache, in the order <see cref="Accept"/> receives them.</summary>
    public virtual IReadOnlyList<string> OutputNames => _outputs ??= Contract.Layers.SelectMany(l => new[] { l.PresentKey, l.PresentValue }).Distinct().ToArray(); // a packed layer has one
    private string[]? _outputs;

    /// <summary>Appends the cache inputs for a step that feeds <paramref name="newTokens"/> tokens; values in <paramref name="owned"/> are disposed by the caller after the run.</summary>
    public abstract void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens);

    /// <summary>Takes ownership of the step's cache outputs (in <see cref="OutputNames"/> order).</summary>
    public abstract void Accept(IReadOnlyList<OrtValue> outputs, int newTokens);

    /// <summary>
    /// Values the runtime binds to the cache outputs (in <see cref="OutputNames"/> order) so the graph writes them in
    /// place, or null when the runtime allocates the outputs and hands them to <see cref="Accept"/>.
    /// </summary>
    public virtual IReadOnlyList<OrtValue>? OutputBuffers => null;

    /// <summary>Forgets every cached token.</summary>
    public abstract void Clear();

    /// <summary>
    /// Host access for KV snapshots (sessions, prefix cache; see Sessions/KvTransfer): the tensor that holds K
    /// (<paramref name="index"/> even) or V (odd) of layer index / 2 and its rows per head (the cached tokens are rows
    /// [0, <see cref="Length"/>) of each head), or null when nothing is allocated yet.
    /// </summary>
    internal virtual (OrtValue Tensor, int RowsPerHead)? HostTensor(int index) => null;

    /// <summary>Whether <see cref="HostTensor"/> and <see cref="PrepareImport"/> work for this cache (sessions fork,
    /// truncate and snapshot through them; the prefix cache skips caches without them).</summary>
    internal virtual bool SupportsSnapshots => false;

    /// <summary>
    /// Drops what the cache holds and makes it hold <paramref name="length"/> rows (contents undefined until
    /// Sessions/KvTransfer writes them through <see cref="HostTensor"/>), the next token at <paramref name="nextPosition"/>.
    /// Throws a <see cref="RuntimeException"/> when this cache cannot hold them.
    /// </summary>
    internal virtual void PrepareImport(int length, int nextPosition) =>
        throw new RuntimeException($"a {GetType().Name} cannot be restored from a KV snapshot");

    public static KvCacheManager Create(DecoderContract contract) => contract.CacheKind switch
    {
        KvCacheKind.Concat => new ConcatKvCache(contract),
        KvCacheKind.Static => new StaticKvCache(contract),
        KvCacheKind.Packed => new PackedKvCache(contract),
        _ => throw new NotSupportedException(contract.CacheKind.ToString()),
    };

    protected static OrtValue Zeros(TensorElementType type, long[] shape)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        v.GetTensorMutableRawData().Clear();
        return v;
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected abstract void Dispose(bool disposing);
}

/// <summary>
/// Caches whose step outputs (one tensor per layer and K/V, layer-major) replace the tensors they hold: the concat
/// cache (present = past + new) and the static cache (updated in place by the graph).
/// </summary>
public abstract class ReplacingKvCache : KvCacheManager
{
    protected readonly OrtValue?[] _tensors; // layer-major: K0, V0, K1, V1, ...
    protected int _length;

    protected ReplacingKvCache(DecoderContract contract) : base(contract) => _tensors = new OrtValue?[contract.Layers.Count * 2];

    public override int Length => _length;

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        if (CheckOutputs(outputs, newTokens) is { } problem)
        {
            foreach (var o in outputs) o.Dispose();
            throw new RuntimeException(problem);
        }
        for (int i = 0; i < _tensors.Length; i++)
        {
            _tensors[i]?.Dispose();
            _tensors[i] = outputs[i];
        }
        _length += newTokens;
    }

    /// <summary>Rows per head of the held tensors: the cached length (concat) or the capacity (static).</summary>
    protected abstract int RowsPerHead { get; }

    internal override (OrtValue Tensor, int RowsPerHead)? HostTensor(int index) => _tensors[index] is { } t ? (t, RowsPerHead) : null;
    internal override bool SupportsSnapshots => true;

    /// <summary>Why the step's outputs cannot become the cache (null when they can).</summary>
    protected virtual string? CheckOutputs(IReadOnlyList<OrtValue> outputs, int newTokens) => null;

    public override void Clear()
    {
        for (int i = 0; i < _tensors.Length; i++) { _tensors[i]?.Dispose(); _tensors[i] = null; }
        _length = 0;
    }

    protected override void Dispose(bool disposing) => Clear();
}

/// <summary>past [1, Hkv, P, D] in, present [1, Hkv, P+S, D] out: the present tensors become the next past.</summary>
public sealed class ConcatKvCache : ReplacingKvCache
{
    public ConcatKvCache(DecoderContract contract) : base(contract) { }
    public override int? Capacity => null;
    protected override int RowsPerHead => _length;

    internal override void PrepareImport(int length, int nextPosition)
    {
        if (nextPosition != length) throw new RuntimeException($"a concat KV cache holds every token: a snapshot of {length} tokens cannot start the next token at {nextPosition}");
        Clear();
        if (length == 0) return;
        for (int i = 0; i < _tensors.Length; i++)
            _tensors[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, Contract.KvType, [1, Contract.KvHeads, length, Contract.HeadDim]);
        _length = length;
    }
    public override long Bytes => _tensors.Sum(t => t is null ? 0 : t.GetTensorSizeInBytes());

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        var c = Contract;
        for (int l = 0; l < c.Layers.Count; l++)
        {
            for (int kv = 0; kv < 2; kv++)
            {
                var t = _tensors[2 * l + kv];
                if (t is null)
                {
                    t = Zeros(c.KvType, [1, c.KvHeads, 0, c.HeadDim]);
                    owned.Add(t);
                }
                names.Add(kv == 0 ? c.Layers[l].PastKey : c.Layers[l].PastValue);
                values.Add(t);
            }
        }
    }

    protected override string? CheckOutputs(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        return shape.Length != 4 || shape[2] != _length + newTokens
            ? $"present key of layer 0 has shape [{string.Join(",", shape)}]; expected [1,{Contract.KvHeads},{_length + newTokens},{Contract.HeadDim}] (past {_length} + {newTokens} new)"
            : null;
    }
}

/// <summary>
/// A fixed-capacity cache [1, L, Hkv*D] that the graph updates in place at <c>write_indices</c>
/// (ONNX opset-24 TensorScatter); <c>nonpad_kv_seqlen</c> tells attention how many slots are valid.
/// </summary>
public sealed class StaticKvCache : ReplacingKvCache
{
    public StaticKvCache(DecoderContract contract) : base(contract) { }
    public override int? Capacity => Contract.StaticCapacity;
    protected override int RowsPerHead => Contract.StaticCapacity!.Value;

    internal override void PrepareImport(int length, int nextPosition)
    {
        if (nextPosition != length) throw new RuntimeException($"a static KV cache holds every token: a snapshot of {length} tokens cannot start the next token at {nextPosition}");
        if (length > Contract.StaticCapacity)
            throw new RuntimeException($"a snapshot of {length} tokens does not fit the static KV cache of {Contract.StaticCapacity} tokens");
        for (int i = 0; i < _tensors.Length; i++)
            _tensors[i] ??= Zeros(Contract.KvType, [1, Contract.StaticCapacity!.Value, Contract.StaticWidth!.Value]);
        _length = length; // slots past length are masked by nonpad_kv_seqlen and overwritten at write_indices
    }
    public override long Bytes => _tensors.Length * (long)Contract.StaticCapacity!.Value * Contract.StaticWidth!.Value * DecoderContract.ElementSize(Contract.KvType);

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        var c = Contract;
        if (_length + newTokens > c.StaticCapacity)
            throw new RuntimeException($"static KV cache holds {c.StaticCapacity} tokens; {_length} cached + {newTokens} new do not fit");
        for (int l = 0; l < c.Layers.Count; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                ref var t = ref _tensors[2 * l + kv];
                t ??= Zeros(c.KvType, [1, c.StaticCapacity!.Value, c.StaticWidth!.Value]);
                names.Add(kv == 0 ? c.Layers[l].PastKey : c.Layers[l].PastValue);
                values.Add(t);
            }
        var wi = OrtValue.CreateTensorValueFromMemory(new long[] { _length }, [1]);
        var nonpad = OrtValue.CreateTensorValueFromMemory(new long[] { _length + newTokens }, [1]);
        owned.Add(wi); owned.Add(nonpad);
        names.Add(c.WriteIndices!); values.Add(wi);
        names.Add(c.NonPadKvSeqLen!); values.Add(nonpad);
    }
}
