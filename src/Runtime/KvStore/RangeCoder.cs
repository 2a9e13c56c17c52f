namespace LongCtx.Runtime.KvStore;

/// <summary>
/// Static symbol statistics for the range coder: frequencies normalised to a total of 2^<see cref="TotalBits"/>, every
/// symbol that occurred keeping at least 1, so its code length is about -log2(freq / total) bits.
/// </summary>
public sealed class SymbolTable
{
    public const int TotalBits = 15;
    public const int Total = 1 << TotalBits;

    private readonly int[] _cum; // _cum[s] = sum of freq[0..s), _cum[Alphabet] = Total (or 0 when empty)

    private SymbolTable(int[] freq)
    {
        Freq = freq;
        _cum = new int[freq.Length + 1];
        for (int s = 0; s < freq.Length; s++) _cum[s + 1] = _cum[s] + freq[s];
    }

    public int Alphabet => Freq.Count;
    public IReadOnlyList<int> Freq { get; }
    public bool IsEmpty => _cum[^1] == 0;
    public int Start(int symbol) => _cum[symbol];
    public int Frequency(int symbol) => _cum[symbol + 1] - _cum[symbol];

    /// <summary>The symbol whose interval [Start, Start + Frequency) holds <paramref name="v"/> (v &lt; Total).</summary>
    public int Find(int v)
    {
        int lo = 0, hi = Freq.Count - 1; // largest s with _cum[s] <= v; zero-frequency symbols have empty intervals
        while (lo < hi)
        {
            int mid = (lo + hi + 1) >> 1;
            if (_cum[mid] <= v) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>Normalises occurrence counts to <see cref="Total"/>; all-zero counts give an empty table (never coded with).</summary>
    public static SymbolTable FromCounts(ReadOnlySpan<long> counts)
    {
        if (counts.Length == 0 || counts.Length > Total) throw new ArgumentOutOfRangeException(nameof(counts), $"alphabet of {counts.Length} symbols; 1..{Total} allowed");
        long n = 0;
        foreach (long c in counts) n += c;
        var freq = new int[counts.Length];
        if (n == 0) return new(freq);
        int sum = 0, top = 0;
        for (int s = 0; s < counts.Length; s++)
        {
            if (counts[s] == 0) continue;
            freq[s] = (int)Math.Max(1, counts[s] * Total / n);
            sum += freq[s];
            if (counts[s] > counts[top] || counts[top] == 0) top = s;
        }
        if (sum < Total) freq[top] += Total - sum;
        while (sum > Total) // rounding up the rare symbols overshot: take back from the largest
        {
            int big = 0;
            for (int s = 1; s < freq.Length; s++) if (freq[s] > freq[big]) big = s;
            int take = Math.Min(sum - Total, freq[big] - 1);
            freq[big] -= take;
            sum -= take;
        }
        return new(freq);
    }

    /// <summary>Appends the table: varint(first used symbol + 1, 0 = empty), varint(last - first), then each frequency.</summary>
    public void Write(List<byte> o)
    {
        int first = -1, last = -1;
        for (int s = 0; s < Freq.Count; s++) if (Freq[s] != 0) { if (first < 0) first = s; last = s; }
        VarInt.Write(o, (uint)(first + 1));
        if (first < 0) return;
        VarInt.Write(o, (uint)(last - first));
        for (int s = first; s <= last; s++) VarInt.Write(o, (uint)Freq[s]);
    }

    /// <summary>Reads a table of <paramref name="alphabet"/> symbols written by <see cref="Write"/>; checks it sums to <see cref="Total"/>.</summary>
    public static SymbolTable Read(ref ReadOnlySpan<byte> src, int alphabet)
    {
        var freq = new int[alphabet];
        uint first = VarInt.Read(ref src);
        if (first == 0) return new(freq);
        uint span = VarInt.Read(ref src);
        if (first - 1 + (ulong)span >= (ulong)alphabet) throw new InvalidDataException($"symbol table spans past its alphabet of {alphabet}");
        long sum = 0;
        for (uint s = first - 1; s <= first - 1 + span; s++)
        {
            uint f = VarInt.Read(ref src);
            if (f > Total) throw new InvalidDataException($"symbol frequency {f} exceeds {Total}");
            freq[s] = (int)f;
            sum += f;
        }
        if (sum != Total) throw new InvalidDataException($"symbol table sums to {sum}, expected {Total}");
        return new(freq);
    }
}

/// <summary>LEB128 unsigned varints.</summary>
public static class VarInt
{
    public static void Write(List<byte> o, uint v)
    {
        while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; }
        o.Add((byte)v);
    }

    public static uint Read(ref ReadOnlySpan<byte> src)
    {
        uint v = 0;
        for (int shift = 0; shift < 35; shift += 7)
        {
            if (src.IsEmpty) throw new InvalidDataException("varint runs past the end of its section");
            byte b = src[0];
            src = src[1..];
            v |= (uint)(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
        throw new InvalidDataException("varint longer than 5 bytes");
    }
}

/// <summary>
/// Range encoder (G. N. N. Martin 1979, "Range encoding"; the byte-wise carry-propagating form of LZMA's rc: 64-bit low,
/// 32-bit range renormalised below 2^24, a cached byte plus a run of 0xFF bytes absorbing a carry). Coding a symbol of
/// frequency f at cumulative start c out of 2^k: r = range >> k; low += r c; range = r f. Output starts with one 0 byte
/// (the decoder reads 5 bytes to fill its 32-bit code).
/// </summary>
public sealed class RangeEncoder
{
    private const uint Top = 1u << 24;
    private readonly List<byte> _out;
    private ulong _low;
    private uint _range = uint.MaxValue;
    private byte _cache;
    private long _cacheSize = 1;

    public RangeEncoder(List<byte> output) => _out = output;

    public void Encode(SymbolTable table, int symbol)
    {
        int f = table.Frequency(symbol);
        if (f == 0) throw new ArgumentException($"symbol {symbol} has zero frequency in its table");
        uint r = _range >> SymbolTable.TotalBits;
        _low += (ulong)r * (uint)table.Start(symbol);
        _range = r * (uint)f;
        while (_range < Top) { _range <<= 8; ShiftLow(); }
    }

    private void ShiftLow()
    {
        if ((uint)_low < 0xFF000000u || (_low >> 32) != 0)
        {
            byte carry = (byte)(_low >> 32);
            byte b = _cache;
            do { _out.Add((byte)(b + carry)); b = 0xFF; } while (--_cacheSize != 0);
            _cache = (byte)(_low >> 24);
        }
        _cacheSize++;
        _low = (_low & 0x00FFFFFFu) << 8;
    }

    /// <summary>Writes the final bytes; the encoder is done afterwards.</summary>
    public void Finish()
    {
        for (int i = 0; i < 5; i++) ShiftLow();
    }
}

/// <summary>Decoder for <see cref="RangeEncoder"/>'s output; reads zeros past the end (the flush makes that unneeded for valid input).</summary>
public ref struct RangeDecoder
{
    private const uint Top = 1u << 24;
    private readonly ReadOnlySpan<byte> _src;
    private int _pos;
    private uint _range;
    private uint _code;

    public RangeDecoder(ReadOnlySpan<byte> src)
    {
        _src = src;
        _range = uint.MaxValue;
        for (int i = 0; i < 5; i++) _code = (_code << 8) | Next();
    }

    private byte Next() => _pos < _src.Length ? _src[_pos++] : (byte)0;

    public int Decode(SymbolTable table)
    {
        uint r = _range >> SymbolTable.TotalBits;
        uint v = _code / r;
        if (v >= SymbolTable.Total || table.IsEmpty) throw new InvalidDataException("range-coded stream is inconsistent with its symbol table");
        int s = table.Find((int)v);
        _code -= r * (uint)table.Start(s);
        _range = r * (uint)table.Frequency(s);
        while (_range < Top) { _code = (_code << 8) | Next(); _range <<= 8; }
        return s;
    }
}
