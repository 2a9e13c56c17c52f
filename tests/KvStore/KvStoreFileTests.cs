using NUnit.Framework;
using LongCtx.Runtime.KvStore;

namespace LongCtx.Tests.KvStore;

/// <summary>The KV-store file format and its three codecs: round trips, error bounds, and every bad-input case.</summary>
[TestFixture]
public sealed class KvStoreFileTests() : TempDirTest("kvstore")
{
    private string Save(KvSnapshot s, string codec, string name = "kv.lckv", int chunk = KvStoreFile.DefaultChunkTokens)
    {
        var path = Path.Combine(Dir, name);
        KvStoreFile.Save(path, s, KvCodecs.Get(codec), chunk);
        return path;
    }

    private static void AssertSameMetadata(KvSnapshot a, KvSnapshot b)
    {
        Assert.That(b.ModelHash, Is.EqualTo(a.ModelHash));
        Assert.That((b.Layers, b.KvHeads, b.HeadDim, b.NextPosition), Is.EqualTo((a.Layers, a.KvHeads, a.HeadDim, a.NextPosition)));
        Assert.That(b.Tokens, Is.EqualTo(a.Tokens));
    }

    [Test]
    public void Raw_RoundTrip_IsBitExact()
    {
        var s = KvFixtures.Snapshot(3, 2, 16, 600) with { NextPosition = 611 };
        var back = KvStoreFile.Load(Save(s, "raw"), "model-a");
        AssertSameMetadata(s, back);
        for (int l = 0; l < s.Layers; l++)
        {
            Assert.That(back.Keys[l], Is.EqualTo(s.Keys[l]), $"keys of layer {l}");
            Assert.That(back.Values[l], Is.EqualTo(s.Values[l]), $"values of layer {l}");
        }
    }

    [Test]
    public void EmptySnapshot_RoundTrips()
    {
        var s = KvFixtures.Snapshot(2, 1, 8, 0);
        foreach (var codec in KvCodecs.Names)
        {
            var back = KvStoreFile.Load(Save(s, codec, codec + ".lckv"));
            Assert.That(back.Length, Is.EqualTo(0));
            Assert.That(back.Keys.All(k => k.Length == 0));
        }
    }

    [Test]
    public void Int8_StaysWithinItsBound()
    {
        var s = KvFixtures.Snapshot(2, 2, 32, 300, seed: 4);
        var back = KvStoreFile.Load(Save(s, "int8"));
        AssertSameMetadata(s, back);
        AssertInt8Bound(s, back);
    }

    private static void AssertInt8Bound(KvSnapshot s, KvSnapshot back)
    {
        int d = s.HeadDim;
        for (int l = 0; l < s.Layers; l++)
            foreach (var (a, b) in new[] { (s.Keys[l], back.Keys[l]), (s.Values[l], back.Values[l]) })
                for (int row = 0; row < a.Length / d; row++)
                {
                    float max = 0;
                    for (int c = 0; c < d; c++) max = Math.Max(max, Math.Abs(a[row * d + c]));
                    for (int c = 0; c < d; c++)
                        Assert.That(Math.Abs(a[row * d + c] - b[row * d + c]), Is.LessThanOrEqualTo(max / 254f * 1.0001f + 1e-7f), $"layer {l} row {row} channel {c}");
                }
    }

    /// <summary>The stated bound: |x - x'| &lt;= 1.01 max|x| / L, max over the element's (chunk, layer, K/V, channel).</summary>
    private static void AssertCacheGenBound(KvSnapshot s, KvSnapshot back, CacheGenOptions o, int chunk)
    {
        for (int l = 0; l < s.Layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var a = kv == 0 ? s.Keys[l] : s.Values[l];
                var b = kv == 0 ? back.Keys[l] : back.Values[l];
                int levels = o.Levels(kv == 0, l, s.Layers);
                for (int h = 0; h < s.KvHeads; h++)
                    for (int t = 0; t < s.Length; t++)
                        for (int d = 0; d < s.HeadDim; d++)
                        {
                            int i = (h * s.Length + t) * s.HeadDim + d;
                            float bound = 1.01f * KvFixtures.ChunkChannelMax(a, s.KvHeads, s.Length, s.HeadDim, chunk, h, t, d) / levels + 1e-6f;
                            if (!(Math.Abs(a[i] - b[i]) <= bound))
                                Assert.Fail($"layer {l} {(kv == 0 ? "key" : "value")} head {h} token {t} channel {d}: |{a[i]} - {b[i]}| > {bound}");
                        }
            }
    }

    [Test]
    public void CacheGen_StaysWithinItsBound_AndIsSmallerThanInt8()
    {
        var s = KvFixtures.Snapshot(4, 2, 32, 700, seed: 5);
        var path = Save(s, "cachegen", "cg.lckv");
        var back = KvStoreFile.Load(path, "model-a");
        AssertSameMetadata(s, back);
        AssertCacheGenBound(s, back, CacheGenOptions.Default, KvStoreFile.DefaultChunkTokens);
        long int8 = new FileInfo(Save(s, "int8", "i8.lckv")).Length, cg = new FileInfo(path).Length;
        Assert.That(cg, Is.LessThan(int8 / 2), $"cachegen {cg} bytes vs int8 {int8} on smooth synthetic KV");
        Assert.That(KvStoreFile.ReadHeader(path).Codec, Is.EqualTo("cachegen"));
    }

    [Test]
    public void RandomShapes_AllCodecs_RoundTripWithinTheirBounds()
    {
        var rng = new Random(2024);
        for (int trial = 0; trial < 30; trial++)
        {
            int layers = rng.Next(1, 6), heads = rng.Next(1, 4), dim = rng.Next(1, 41), length = rng.Next(0, 520), chunk = rng.Next(1, 300);
            var s = KvFixtures.Snapshot(layers, heads, dim, length, seed: trial, scale: (float)Math.Pow(10, rng.Next(-3, 3)));
            var opts = new CacheGenOptions(rng.Next(1, 40), rng.Next(1, 70), [rng.Next(1, 128), rng.Next(1, 20), rng.Next(1, 8)], [rng.Next(1, 128), rng.Next(1, 20), rng.Next(1, 8)]);
            string what = $"trial {trial}: {layers}x{heads}x{length}x{dim}, chunk {chunk}, {opts}";
            var path = Path.Combine(Dir, $"t{trial}.lckv");

            KvStoreFile.Save(path, s, new RawKvCodec(), chunk);
            var raw = KvStoreFile.Load(path);
            for (int l = 0; l < layers; l++) Assert.That(raw.Keys[l], Is.EqualTo(s.Keys[l]), what);

            KvStoreFile.Save(path, s, new Int8KvCodec(), chunk);
            AssertInt8Bound(s, KvStoreFile.Load(path));

            KvStoreFile.Save(path, s, new CacheGenKvCodec(opts), chunk);
            var cg = KvStoreFile.Load(path, "model-a");
            AssertSameMetadata(s, cg);
            AssertCacheGenBound(s, cg, opts, chunk);
        }
    }

    [TestCase("int8"), TestCase("cachegen"), TestCase("raw")]
    public void ParallelDecode_EqualsSerialDecode(string name)
    {
        var s = KvFixtures.Snapshot(3, 2, 24, 1100, seed: 8);
        var codec = KvCodecs.Get(name);
        var layout = KvLayout.Of(s, 128);
        var enc = codec.Encode(s, layout);
        float[][] Fresh() => Enumerable.Range(0, s.Layers).Select(_ => new float[s.Keys[0].Length]).ToArray();
        var (k1, v1, k2, v2) = (Fresh(), Fresh(), Fresh(), Fresh());
        var serial = codec.OpenDecoder(layout, enc.Shared);
        for (int i = layout.Chunks - 1; i >= 0; i--) serial.Decode(i, enc.Chunks[i], k1, v1);
        var parallel = codec.OpenDecoder(layout, enc.Shared);
        Parallel.For(0, layout.Chunks, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel.Decode(i, enc.Chunks[i], k2, v2));
        for (int l = 0; l < s.Layers; l++)
        {
            Assert.That(k2[l], Is.EqualTo(k1[l]));
            Assert.That(v2[l], Is.EqualTo(v1[l]));
        }
        Assert.That(codec.Encode(s, layout).Chunks, Is.EqualTo(enc.Chunks), "encoding is deterministic");
    }

    private static KvStoreException LoadFails(string path, string? hash = null)
    {
        var e = Assert.Throws<KvStoreException>(() => KvStoreFile.Load(path, hash))!;
        Assert.That(e.Message, Does.Contain(path));
        Assert.That(e.Message, Does.Not.Contain("\n"));
        return e;
    }

    [Test]
    public void AnotherModelsFile_IsRefused_NamingBothHashes()
    {
        var path = Save(KvFixtures.Snapshot(2, 1, 8, 40, hash: "aaaa1111"), "cachegen");
        var e = LoadFails(path, "bbbb2222");
        Assert.That(e.Error, Is.EqualTo(KvStoreError.ModelMismatch));
        Assert.That(e.Message, Does.Contain("aaaa1111").And.Contain("bbbb2222"));
    }

    [Test]
    public void AnotherVersion_IsRefused()
    {
        var path = Save(KvFixtures.Snapshot(2, 1, 8, 40), "raw");
        var b = File.ReadAllBytes(path);
        b[8] = 2; // u32 version after the 8-byte magic
        File.WriteAllBytes(path, b);
        var e = LoadFails(path);
        Assert.That(e.Error, Is.EqualTo(KvStoreError.Version));
        Assert.That(e.Message, Does.Contain("version 2").And.Contain("version 1"));
    }

    [TestCase("raw"), TestCase("int8"), TestCase("cachegen")]
    public void TruncatedFile_IsRefusedAtEveryLength(string codec)
    {
        var path = Save(KvFixtures.Snapshot(2, 2, 8, 300), codec);
        var b = File.ReadAllBytes(path);
        var cut = Path.Combine(Dir, "cut.lckv");
        for (int n = 1; n < b.Length; n += Math.Max(1, n / 40))
        {
            File.WriteAllBytes(cut, b[..n]);
            Assert.That(LoadFails(cut).Error, Is.EqualTo(KvStoreError.Truncated), $"cut at {n} of {b.Length}");
        }
        File.WriteAllBytes(cut, []);
        Assert.That(LoadFails(cut).Error, Is.EqualTo(KvStoreError.Format), "an empty file");
    }

    [TestCase("raw"), TestCase("int8"), TestCase("cachegen")]
    public void CorruptedByte_AnywhereIsRefused(string codec)
    {
        var path = Save(KvFixtures.Snapshot(2, 2, 8, 300), codec);
        var b = File.ReadAllBytes(path);
        var bad = Path.Combine(Dir, "bad.lckv");
        for (int i = 0; i < b.Length; i += 1 + i / 50)
        {
            var c = (byte[])b.Clone();
            c[i] ^= (byte)(1 << (i % 8));
            File.WriteAllBytes(bad, c);
            var e = LoadFails(bad);
            if (i >= 16) Assert.That(e.Error, Is.AnyOf(KvStoreError.Corrupted, KvStoreError.Truncated, KvStoreError.Format), $"byte {i}");
        }
        // a flipped bit inside the last chunk's body is a checksum failure
        var last = (byte[])b.Clone();
        last[^10] ^= 0x10;
        File.WriteAllBytes(bad, last);
        Assert.That(LoadFails(bad).Error, Is.EqualTo(KvStoreError.Corrupted));
    }

    [Test]
    public void TrailingBytes_AndForeignFiles_AreRefused()
    {
        var path = Save(KvFixtures.Snapshot(1, 1, 4, 10), "raw");
        File.AppendAllText(path, "x");
        Assert.That(LoadFails(path).Error, Is.EqualTo(KvStoreError.Format));
        File.WriteAllText(path, "{\"not\": \"a kv file\"}");
        var e = LoadFails(path);
        Assert.That(e.Error, Is.EqualTo(KvStoreError.Format));
        Assert.That(e.Message, Does.Contain("not an lcc KV-store file"));
        var fifo = Path.Combine(Dir, "fifo.lckv");
        File.CreateSymbolicLink(Path.Combine(Dir, "zero.lckv"), "/dev/zero");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        foreach (var special in new[] { fifo, Path.Combine(Dir, "zero.lckv") })
            Assert.That(Assert.Throws<LongCtx.Contract.UnsafeFileException>(() => KvStoreFile.Load(special))!.Message,
                Does.Contain("not a regular file"), "a FIFO would block forever, /dev/zero never ends: refused before opening");
        var missing = Path.Combine(Dir, "missing.lckv");
        Assert.That(Assert.Throws<FileNotFoundException>(() => KvStoreFile.Load(missing))!.Message, Does.Contain(missing));
    }

    /// <summary>A codec whose output breaks the writer half way (a null chunk): the temporary file must not survive.</summary>
    private sealed class BrokenCodec : IKvCodec
    {
        public string Name => "raw";
        public string ErrorBound => "";
        public KvEncoding Encode(KvSnapshot snapshot, KvLayout layout) => new([], [new byte[4], null!]);
        public IKvChunkDecoder OpenDecoder(KvLayout layout, ReadOnlySpan<byte> shared) => throw new NotSupportedException();
    }

    [Test]
    public void FailedSave_LeavesTheOldFileAndNoTemporary()
    {
        var good = KvFixtures.Snapshot(1, 1, 4, 10);
        var path = Save(good, "raw");
        var before = File.ReadAllBytes(path);
        Assert.Throws<NullReferenceException>(() => KvStoreFile.Save(path, good, new BrokenCodec(), 8));
        var nan = KvFixtures.Snapshot(1, 1, 4, 10);
        nan.Values[0][3] = float.NaN;
        var e = Assert.Throws<ArgumentException>(() => KvStoreFile.Save(path, nan, new CacheGenKvCodec()))!;
        Assert.That(e.Message, Does.Contain("non-finite").And.Contain("nothing saved"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before), "the old file is untouched");
        Assert.That(Directory.GetFiles(Dir).Select(Path.GetFileName), Is.EqualTo(new[] { "kv.lckv" }), "no temporary file left");
        Assert.That(Assert.Throws<DirectoryNotFoundException>(() => KvStoreFile.Save(Path.Combine(Dir, "no", "kv.lckv"), good, new RawKvCodec()))!.Message,
            Does.Contain("does not exist"));
    }

    [Test]
    public void UnknownCodecName_ListsTheKnownOnes() =>
        Assert.That(Assert.Throws<ArgumentException>(() => KvCodecs.Get("zstd"))!.Message, Does.Contain("raw, int8, cachegen"));
}
