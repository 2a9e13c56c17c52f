using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>Which KV-cache manager a model's generators use.</summary>
public enum KvCacheMode
{
    /// <summary>Shared buffer when every attention allows it (checked on load), else concat (with a note).</summary>
    Auto,
    /// <summary>present = concat(past, new) each step: the cache is copied whole every call.</summary>
    Concat,
    /// <summary>One [1, Hkv, capacity, D] buffer per layer and K/V bound as both past and present: appended in place.</summary>
    Shared,
}

/// <summary>
/// One preallocated buffer [1, Hkv, capacity, D] per layer and K/V, bound through an IOBinding as both the past input
/// and the present output of com.microsoft.GroupQueryAttention. The kernel detects the shared buffer (past data pointer
/// == present data pointer) and writes the new tokens in place at seqlens_k + 1 - S, so a decode step no longer
/// copies the whole cache (ORT contrib_ops GroupQueryAttention: present length = max(total_sequence_length, past
/// buffer length) = capacity, the same shape as the past). The mask fed to the graph stays sized to the real total
/// length: seqlens_k = sum(mask) - 1 and total_sequence_length = mask width are what tell the kernel where to write.
/// With <see cref="Growable"/> (no explicit capacity, host memory) a full buffer is reallocated at twice the size and
/// the held tokens copied once; otherwise a step that does not fit is an error naming both numbers.
/// </summary>
public sealed class SharedBufferKvCache : KvCacheManager
{
    private readonly OrtValue?[] _buffers; // layer-major: K0, V0, K1, V1, ...
    private readonly OrtAllocator? _allocator; // null: host memory (OrtAllocator.DefaultInstance)
    private readonly string _model;
    private readonly int? _limit;
    private int _capacity, _length;

    /// <param name="capacity">buffer length in tokens</param>
    /// <param name="growable">double the buffer when full (host memory only), up to <paramref name="limit"/></param>
    public SharedBufferKvCache(DecoderContract contract, string model, int capacity, bool growable = false, int? limit = null,
        OrtAllocator? deviceAllocator = null) : base(contract)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), $"{model}: shared KV buffer length must be positive, got {capacity}");
        _buffers = new OrtValue?[contract.Layers.Count * 2];
        _model = model;
        _capacity = capacity;
        _allocator = deviceAllocator;
        Growable = growable && deviceAllocator is null;
        _limit = limit;
    }

    /// <summary>Whether a full buffer is reallocated larger instead of failing.</summary>
    public bool Growable { get; }

    /// <summary>Current buffer length in tokens.</summary>
    public int BufferLength => _capacity;

    public override int Length => _length;
    public override int? Capacity => Growable ? _limit : _capacity;
    public override long Bytes => _buffers[0] is null ? 0 : _buffers.Length * (long)_capacity * Contract.KvHeads * Contract.HeadDim * DecoderContract.ElementSize(Contract.KvType);

    /// <summary>The buffers the runtime binds to the present outputs: the same values that went in as past.</summary>
    public override IReadOnlyList<OrtValue>? OutputBuffers => _buffers!;

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        int need = _length + newTokens;
        if (need > _capacity)
        {
            if (!Growable || (_limit is { } lim && need > lim))
                throw new RuntimeException($"{_model}: {_length} cached + {newTokens} new tokens = {need} do not fit the shared KV buffer of {(Growable ? _limit : _capacity)} tokens; raise --max-context (RuntimeOptions.MaxContext) or use --kv-cache concat");
            int cap = _capacity;
            while (cap < need) cap *= 2;
            if (_limit is { } l) cap = Math.Min(cap, l);
            Grow(cap);
        }
        var c = Contract;
        for (int l = 0; l < c.Layers.Count; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                ref var t = ref _buffers[2 * l + kv];
                t ??= Allocate(_capacity);
                names.Add(kv == 0 ? c.Layers[l].PastKey : c.Layers[l].PastValue);
                values.Add(t);
            }
    }

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        DisposeInPlaceOutputs(outputs, _capacity, _model, "shared buffer");
        _length += newTokens;
    }

    public override void Clear() => _length = 0; // buffers are kept: the kernel reads only [0, seqlens_k]

    internal override (OrtValue Tensor, int RowsPerHead)? HostTensor(int index) =>
        _buffers[index] is { } b ? (_allocator is null ? (b, _capacity) : throw new RuntimeException($"{_model}: the shared KV buffer is in device memory; KV snapshots need host memory (--ep cpu)")) : null;

    internal override bool SupportsSnapshots => _allocator is null;

    internal override void PrepareImport(int length, int nextPosition)
    {
        if (nextPosition != length) throw new RuntimeException($"{_model}: the shared KV buffer holds every token: a snapshot of {length} tokens cannot start the next token at {nextPosition}");
        if (_allocator is not null) throw new RuntimeException($"{_model}: the shared KV buffer is in device memory; KV snapshots need host memory (--ep cpu)");
        if (length > _capacity && (!Growable || (_limit is { } lim && length > lim)))
            throw new RuntimeException($"{_model}: a snapshot of {length} tokens does not fit the shared KV buffer of {(Growable ? _limit : _capacity)} tokens; raise --max-context (RuntimeOptions.MaxContext) or use --kv-cache concat");
        _length = 0;
        if (length > _capacity)
        {
            int cap = _capacity;
            while (cap < length) cap *= 2;
            if (_limit is { } l) cap = Math.Min(cap, l);
            Grow(cap); // nothing held: only the buffers' size changes
        }
        for (int i = 0; i < _buffers.Length; i++) _buffers[i] ??= Allocate(_capacity);
        _length = length;
    }

    /// <summary>Forgets every row from <paramref name="length"/> on (an evicting cache compacted the buffers in place).</summary>
    internal void Truncate(int length) => _length = length <= _length && length >= 0 ? length : throw new ArgumentOutOfRangeException(nameof(length), $"{_model}: cannot truncate {_length} cached tokens to {length}");

    private OrtValue Allocate(int capacity)
    {
        // not zeroed: the kernels read only rows [0, seqlens_k] (written before they are read), so a large buffer stays
        // untouched, fresh pages until tokens arrive: its capacity costs neither memset time nor resident memory
        long[] shape = [1, Contract.KvHeads, capacity, Contract.HeadDim];
        try { return OrtValue.CreateAllocatedTensorValue(_allocator ?? OrtAllocator.DefaultInstance, Contract.KvType, shape); }
        catch (OnnxRuntimeException e)
        {
            throw new RuntimeException($"{_model}: cannot allocate a shared KV buffer of {capacity} tokens [{string.Join(",", shape)}] ({e.Message.Split('\n')[0]}); lower --max-context or use --kv-cache concat", e);
        }
    }

    /// <summary>Host buffers only: new [1, H, cap, D] buffers with each head's first Length rows copied over.</summary>
    private void Grow(int capacity)
    {
        int h = Contract.KvHeads;
        long row = (long)Contract.HeadDim * DecoderContract.ElementSize(Contract.KvType);
        for (int i = 0; i < _buffers.Length; i++)
        {
            var old = _buffers[i];
            if (old is null) continue;
            var fresh = Allocate(capacity);
            var src = old.GetTensorMutableRawData();
            var dst = fresh.GetTensorMutableRawData();
            for (int head = 0; head < h; head++)
                src.Slice((int)(head * _capacity * row), (int)(_length * row)).CopyTo(dst.Slice((int)(head * capacity * row)));
            old.Dispose();
            _buffers[i] = fresh;
        }
        _capacity = capacity;
    }

    protected override void Dispose(bool disposing)
    {
        for (int i = 0; i < _buffers.Length; i++) { _buffers[i]?.Dispose(); _buffers[i] = null; }
        _length = 0;
        _allocator?.Dispose();
    }
}
