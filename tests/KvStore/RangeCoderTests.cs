using System.Text;
using NUnit.Framework;
using LongCtx.Runtime.KvStore;

namespace LongCtx.Tests.KvStore;

/// <summary>The entropy coder and the checksum on their own.</summary>
[TestFixture]
public sealed class RangeCoderTests
{
    [Test]
    public void Crc32C_MatchesTheRfc3720CheckValue()
    {
        Assert.That(Crc32C.Compute("123456789"u8), Is.EqualTo(0xE3069283u));
        Assert.That(Crc32C.Compute([]), Is.EqualTo(0u));
        var b = Encoding.ASCII.GetBytes("a longer buffer so the 8-byte path and the tail both run");
        var flipped = (byte[])b.Clone();
        flipped[13] ^= 4;
        Assert.That(Crc32C.Compute(flipped), Is.Not.EqualTo(Crc32C.Compute(b)));
    }

    [Test]
    public void SymbolTable_SumsToTotal_KeepsEverySeenSymbol()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 200; trial++)
        {
            var counts = new long[rng.Next(1, 300)];
            for (int s = 0; s < counts.Length; s++) counts[s] = rng.Next(4) == 0 ? 0 : (long)Math.Pow(10, rng.NextDouble() * 7);
            var t = SymbolTable.FromCounts(counts);
            if (counts.All(c => c == 0)) { Assert.That(t.IsEmpty); continue; }
            Assert.That(t.Freq.Sum(), Is.EqualTo(SymbolTable.Total));
            for (int s = 0; s < counts.Length; s++) Assert.That(t.Freq[s] > 0, Is.EqualTo(counts[s] > 0), $"symbol {s}");
            var bytes = new List<byte>();
            t.Write(bytes);
            var span = (ReadOnlySpan<byte>)bytes.ToArray();
            Assert.That(SymbolTable.Read(ref span, counts.Length).Freq, Is.EqualTo(t.Freq));
            Assert.That(span.IsEmpty);
        }
    }

    [Test]
    public void RoundTrip_RandomStreamsOverSeveralTables()
    {
        var rng = new Random(11);
        for (int trial = 0; trial < 50; trial++)
        {
            var tables = Enumerable.Range(0, 1 + rng.Next(4)).Select(_ =>
            {
                var c = new long[1 + rng.Next(255)];
                for (int s = 0; s < c.Length; s++) c[s] = rng.Next(3) == 0 ? 0 : rng.Next(1, 1000);
                c[rng.Next(c.Length)] += 1;
                return SymbolTable.FromCounts(c);
            }).ToArray();
            int n = rng.Next(0, 5000);
            var which = new int[n];
            var syms = new int[n];
            for (int i = 0; i < n; i++)
            {
                which[i] = rng.Next(tables.Length);
                var f = tables[which[i]].Freq;
                do syms[i] = rng.Next(f.Count); while (f[syms[i]] == 0);
            }
            var o = new List<byte>();
            var enc = new RangeEncoder(o);
            for (int i = 0; i < n; i++) enc.Encode(tables[which[i]], syms[i]);
            enc.Finish();
            var dec = new RangeDecoder(o.ToArray());
            for (int i = 0; i < n; i++) Assert.That(dec.Decode(tables[which[i]]), Is.EqualTo(syms[i]), $"trial {trial}, symbol {i}");
        }
    }

    [Test]
    public void SkewedSource_CodesNearItsEntropy()
    {
        // p = (0.9, 0.05, 0.03, 0.02): entropy 0.6175 bits; 100k symbols should take about 7.7 kB
        double[] p = [0.9, 0.05, 0.03, 0.02];
        var rng = new Random(5);
        int n = 100_000;
        var syms = new int[n];
        var counts = new long[4];
        for (int i = 0; i < n; i++)
        {
            double u = rng.NextDouble(), acc = 0;
            int s = 0;
            while (s < 3 && u >= (acc += p[s])) s++;
            syms[i] = s;
            counts[s]++;
        }
        var t = SymbolTable.FromCounts(counts);
        var o = new List<byte>();
        var enc = new RangeEncoder(o);
        foreach (int s in syms) enc.Encode(t, s);
        enc.Finish();
        double entropy = -p.Sum(x => x * Math.Log2(x));
        double bits = o.Count * 8.0 / n;
        Assert.That(bits, Is.LessThan(entropy * 1.01 + 0.001), $"{bits:F4} bits/symbol vs entropy {entropy:F4}");
        var dec = new RangeDecoder(o.ToArray());
        foreach (int s in syms) Assert.That(dec.Decode(t), Is.EqualTo(s));
    }

    [Test]
    public void Decoder_OnAGarbageStream_FailsOrDecodesButNeverCrashes()
    {
        var t = SymbolTable.FromCounts([5, 0, 0, 1]);
        var rng = new Random(9);
        var junk = new byte[64];
        for (int trial = 0; trial < 100; trial++)
        {
            rng.NextBytes(junk);
            try
            {
                var dec = new RangeDecoder(junk);
                for (int i = 0; i < 1000; i++) Assert.That(dec.Decode(t), Is.EqualTo(0).Or.EqualTo(3), "only symbols with a frequency decode");
            }
            catch (InvalidDataException) { }
        }
    }
}
