using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Runtime;

/// <summary>
/// The streaming KV policy a compiled model asks for (longctx.json <c>runtime.kv</c>, written by lower-attention):
/// keep <see cref="Sink"/> first tokens and the <see cref="Window"/> most recent. <see cref="MaxPositions"/> is the
/// number of RoPE rows the op can index by cache position (null: no rotary), which bounds the buffer.
/// </summary>
public sealed record StreamingPolicy(int Sink, int Window, int? MaxPositions)
{
    /// <summary>Largest sink + window a streaming buffer may hold (keeps buffer sizes and their byte offsets in range).</summary>
    public const int MaxTokens = 1 << 24;

    /// <summary>The policy in longctx.json's runtime section, or null when the model does not stream.</summary>
    public static StreamingPolicy? From(RuntimeSection runtime, string model)
    {
        if (runtime.Kv is not { Policy: "streaming" } kv) return null;
        if (kv.Sink < 0 || kv.Window < 1 || kv.MaxPositions is < 1 || (long)kv.Sink + kv.Window > MaxTokens)
            throw new RuntimeException($"{model}: longctx.json runtime.kv (streaming) has sink {kv.Sink}, window {kv.Window}, max_positions {kv.MaxPositions}; recompile with lcc compile --attention streaming");
        return new StreamingPolicy(kv.Sink, kv.Window, kv.MaxPositions);
    }
}

/// <summary>
/// The KV cache of a streaming model (StreamingLLM, Xiao et al. 2023, arXiv:2309.17453): one shared past/present buffer
/// [1, Hkv, sink + window + extra, D] per layer and K/V, bound through an IOBinding like <see cref="SharedBufferKvCache"/>
/// (longctx.LongAttention appends in place), so memory is flat however many tokens are generated. extra = min(step,
/// RoPE rows - sink - window): positions are cache-relative inside the op (keys cached un-rotated, rotated by their
/// cache index), so the buffer never outgrows the RoPE table. Before a call of S tokens that would overflow the buffer,
/// the oldest non-sink tokens are evicted: the keep = min(window, buffer - sink - S) most recent rows of every head move
/// to [sink, sink + keep) (a memmove inside the buffer). With extra &gt;= S every query still sees its whole window; with
/// no extra (RoPE rows = sink + window) a decode step sees exactly sink + window tokens, as in StreamingLLM, and a
/// prefill chunk's first query sees window - S + 1 recent tokens. <see cref="KvCacheManager.Length"/> is the cache length
/// that the attention mask (seqlens_k) describes; <see cref="NextPosition"/> keeps counting absolute tokens. A call may
/// add at most <see cref="MaxStep"/> tokens (extra, or window / 4 without extra); the generator prefills in such chunks.
/// </summary>
public sealed class StreamingKvCache : KvCacheManager
{
    private readonly OrtValue?[] _buffers; // layer-major: K0, V0, K1, V1, ...
    private readonly string _model;
    private int _length;
    private long _seen, _evicted;

    /// <param name="step">headroom beyond sink + window to allocate (tokens), capped by the RoPE rows</param>
    public StreamingKvCache(DecoderContract contract, string model, StreamingPolicy policy, int step) : base(contract)
    {
        if (policy.Window < 1) throw new RuntimeException($"{model}: streaming window must be at least 1, got {policy.Window}");
        int extra = Math.Max(0, step);
        if (policy.MaxPositions is int rows)
        {
            if (rows < policy.Sink + policy.Window)
                throw new RuntimeException($"{model}: the streaming cache (sink {policy.Sink} + window {policy.Window}) exceeds the {rows} RoPE rows; recompile with a smaller window");
            extra = Math.Min(extra, rows - policy.Sink - policy.Window);
        }
        Policy = policy;
        MaxStep = extra > 0 ? extra : Math.Max(1, policy.Window / 4);
        BufferLength = policy.Sink + policy.Window + extra;
        _buffers = new OrtValue?[contract.Layers.Count * 2];
        _model = model;
    }

    public StreamingPolicy Policy { get; }

    /// <summary>Buffer length in tokens: sink + window + step (fixed).</summary>
    public int BufferLength { get; }

    /// <summary>Tokens evicted so far.</summary>
    public long Evicted => _evicted;

    public override int Length => _length;
    public override int NextPosition => checked((int)_seen);
    public override int? Capacity => null; // generation is unbounded: the cache evicts
    public override int? MaxStep { get; }
    public override long Bytes => _buffers[0] is null ? 0 : _buffers.Length * (long)BufferLength * Contract.KvHeads * Contract.HeadDim * DecoderContract.ElementSize(Contract.KvType);
    public override IReadOnlyList<OrtValue>? OutputBuffers => _buffers!;

    /// <summary>Evicts so that <paramref name="newTokens"/> more fit: keeps the sinks and the most recent tokens (up to window).</summary>
    public override void Reserve(int newTokens)
    {
        if (newTokens > MaxStep)
            throw new RuntimeException($"{_model}: a call of {newTokens} tokens exceeds the streaming cache's step of {MaxStep} (buffer {BufferLength}, sink {Policy.Sink}, window {Policy.Window}); feed at most {MaxStep} tokens per call (--chunk)");
        if (_length + newTokens <= BufferLength) return;
        int keep = Math.Min(Policy.Window, BufferLength - Policy.Sink - newTokens), from = _length - keep, to = Policy.Sink;
        long row = (long)Contract.HeadDim * DecoderContract.ElementSize(Contract.KvType);
        for (int i = 0; i < _buffers.Length; i++)
        {
            if (_buffers[i] is not { } b) continue;
            var data = b.GetTensorMutableRawData();
            for (int h = 0; h < Contract.KvHeads; h++)
            {
                long head = h * (long)BufferLength * row;
                data.Slice((int)(head + from * row), (int)(keep * row)).CopyTo(data.Slice((int)(head + to * row))); // overlapping: memmove
            }
        }
        _evicted += _length - (Policy.Sink + keep);
        _length = Policy.Sink + keep;
    }

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        if (_length + newTokens > BufferLength)
            throw new RuntimeException($"{_model}: {_length} cached + {newTokens} new tokens do not fit the streaming buffer of {BufferLength}; call Reserve first");
        var c = Contract;
        for (int l = 0; l < c.Layers.Count; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                ref var t = ref _buffers[2 * l + kv];
                t ??= Allocate();
                names.Add(kv == 0 ? c.Layers[l].PastKey : c.Layers[l].PastValue);
                values.Add(t);
            }
    }

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        DisposeInPlaceOutputs(outputs, BufferLength, _model, "streaming buffer");
        _length += newTokens;
        _seen += newTokens;
    }

    public override void Clear()
    {
        _length = 0;
        _seen = 0;
        _evicted = 0;
    }

    internal override (OrtValue Tensor, int RowsPerHead)? HostTensor(int index) => _buffers[index] is { } b ? (b, BufferLength) : null;
    internal override bool SupportsSnapshots => true;

    /// <summary>A snapshot of a streaming cache: at most the buffer's rows; positions go on from <paramref name="nextPosition"/>.</summary>
    internal override void PrepareImport(int length, int nextPosition)
    {
        if (length > BufferLength)
            throw new RuntimeException($"{_model}: a snapshot of {length} tokens does not fit the streaming buffer of {BufferLength} (sink {Policy.Sink}, window {Policy.Window})");
        for (int i = 0; i < _buffers.Length; i++) _buffers[i] ??= Allocate();
        _length = length;
        _seen = nextPosition;
        _evicted = nextPosition - length;
    }

    private OrtValue Allocate()
    {
        return Zeros(Contract.KvType, [1, Contract.KvHeads, BufferLength, Contract.HeadDim]); // host memory: eviction moves rows in place
    }

    protected override void Dispose(bool disposing)
    {
        for (int i = 0; i < _buffers.Length; i++) { _buffers[i]?.Dispose(); _buffers[i] = null; }
        _length = 0;
    }
}
