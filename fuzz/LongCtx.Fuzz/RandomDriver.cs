using System.Diagnostics;
using System.Security.Cryptography;

namespace LongCtx.Fuzz;

/// <summary>
/// The fallback driver for machines without afl++: random mutation of a seed corpus, in process, for a set time, through
/// <see cref="FuzzTarget.Run"/> (the same entry point afl++ drives). Mutations (after AFL's havoc stage): bit flips,
/// interesting byte values (0, 1, 0x7f, 0x80, 0xff), little-endian interesting integers (-1, 2^31-1, 2^63-1, 2^32),
/// protobuf varint rewrites (a random varint replaced by a huge or zero one), chunk deletion, duplication, and splicing
/// two corpus inputs. Inputs that raise a new outcome are added to the corpus (and the first of each refusal is saved
/// as OUT/outcome-HASH.onnx with the one-line message it gets, to judge the message). A finding (an exception that is not a
/// CLI refusal) is saved as OUT/crash-TYPE-HASH.onnx, one per distinct (type, top frame); an input that runs over 10 s
/// is saved as OUT/hang-HASH.onnx and ends the run (the stuck thread cannot be stopped in process).
/// </summary>
internal static class RandomDriver
{
    private static readonly byte[] InterestingBytes = [0, 1, 0x7f, 0x80, 0xff];
    private static readonly long[] InterestingInts = [-1, 0, 1, int.MaxValue, int.MinValue, long.MaxValue, 1L << 32, 1L << 61];

    public static int Run(TimeSpan duration, string corpusDir, string outDir, int seed)
    {
        var corpus = Directory.EnumerateFiles(corpusDir).Where(f => new FileInfo(f).Length is > 0 and < 4 << 20).Select(File.ReadAllBytes).ToList();
        if (corpus.Count == 0) { Console.Error.WriteLine($"fuzz: no seed inputs in {corpusDir}"); return 2; }
        Directory.CreateDirectory(outDir);
        var rng = new Random(seed);
        var outcomes = new Dictionary<string, long>(StringComparer.Ordinal);
        var findings = new Dictionary<string, int>(StringComparer.Ordinal);
        long execs = 0;
        byte[] current = [];
        var lastStart = Stopwatch.GetTimestamp();
        var clock = Stopwatch.StartNew();
        bool hung = false;
        var worker = new Thread(() =>
        {
            while (clock.Elapsed < duration)
            {
                current = Mutate(rng, corpus);
                Interlocked.Exchange(ref lastStart, Stopwatch.GetTimestamp());
                string outcome;
                string? message = null;
                try { outcome = FuzzTarget.Run(current, out message); }
                catch (Exception e)
                {
                    outcome = "FINDING " + Minimizer.Describe(e);
                    if (!findings.ContainsKey(outcome))
                    {
                        var file = Path.Combine(outDir, $"crash-{e.GetType().Name}-{Hash(current)}.onnx");
                        File.WriteAllBytes(file, current);
                        Console.WriteLine($"fuzz: {outcome}: {e.Message.ReplaceLineEndings(" ")} -> {file}");
                    }
                    findings[outcome] = findings.GetValueOrDefault(outcome) + 1;
                }
                if (!outcomes.ContainsKey(outcome))
                {
                    if (corpus.Count < 4096) corpus.Add(current);
                    // the first input of each outcome, with what lcc would print: refusals should read as advice, not .NET internals
                    if (message is not null)
                    {
                        var file = Path.Combine(outDir, $"outcome-{Hash(current)}.onnx");
                        File.WriteAllBytes(file, current);
                        Console.WriteLine($"fuzz: new outcome '{outcome}': lcc: error: {message.ReplaceLineEndings(" ")} -> {file}");
                    }
                }
                outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
                Interlocked.Increment(ref execs);
            }
        }) { IsBackground = true, Name = "fuzz worker" };
        worker.Start();
        while (!worker.Join(500))
        {
            if (Stopwatch.GetElapsedTime(Interlocked.Read(ref lastStart)) > TimeSpan.FromSeconds(10))
            {
                var file = Path.Combine(outDir, $"hang-{Hash(current)}.onnx");
                File.WriteAllBytes(file, current);
                Console.WriteLine($"fuzz: HANG (one input ran over 10 s) -> {file}");
                hung = true;
                break;
            }
        }
        Console.WriteLine($"fuzz: random driver, seed {seed}, ran {clock.Elapsed.TotalSeconds:F0} s, {Interlocked.Read(ref execs)} execs ({Interlocked.Read(ref execs) / Math.Max(1, clock.Elapsed.TotalSeconds):F0}/s), corpus {corpus.Count}, {findings.Count} distinct findings{(hung ? ", 1 hang" : "")}");
        foreach (var (o, n) in outcomes.OrderByDescending(kv => kv.Value)) Console.WriteLine($"  {n,9}  {o}");
        return findings.Count == 0 && !hung ? 0 : 1;
    }

    private static string Hash(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b))[..12];

    private static byte[] Mutate(Random rng, List<byte[]> corpus)
    {
        var data = corpus[rng.Next(corpus.Count)].ToArray();
        int rounds = 1 << rng.Next(4);
        for (int i = 0; i < rounds && data.Length > 0; i++)
        {
            int at = rng.Next(data.Length);
            switch (rng.Next(7))
            {
                case 0: data[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: data[at] = InterestingBytes[rng.Next(InterestingBytes.Length)]; break;
                case 2:
                    var v = BitConverter.GetBytes(InterestingInts[rng.Next(InterestingInts.Length)]);
                    Array.Copy(v, 0, data, at, Math.Min(v.Length >> rng.Next(2), data.Length - at));
                    break;
                case 3: data = ReplaceVarint(rng, data, at); break;
                case 4:
                    int len = Math.Min(rng.Next(1, 64), data.Length - at);
                    data = [.. data.AsSpan(0, at), .. data.AsSpan(at + len)];
                    break;
                case 5:
                    int dl = Math.Min(rng.Next(1, 64), data.Length - at);
                    data = [.. data.AsSpan(0, at + dl), .. data.AsSpan(at, dl), .. data.AsSpan(at + dl)];
                    break;
                default:
                    var other = corpus[rng.Next(corpus.Count)];
                    int from = rng.Next(other.Length);
                    data = [.. data.AsSpan(0, at), .. other.AsSpan(from, Math.Min(other.Length - from, rng.Next(1, 256)))];
                    break;
            }
        }
        return data;
    }

    /// <summary>Finds the varint starting at or after <paramref name="at"/> and replaces it by a zero, huge or random one.</summary>
    private static byte[] ReplaceVarint(Random rng, byte[] data, int at)
    {
        int end = at;
        while (end < data.Length && end - at < 10 && (data[end] & 0x80) != 0) end++;
        if (end >= data.Length) return data;
        ulong value = rng.Next(3) switch { 0 => 0, 1 => ulong.MaxValue >> rng.Next(64), _ => (ulong)rng.NextInt64() };
        var enc = new List<byte>();
        do { byte b = (byte)(value & 0x7f); value >>= 7; enc.Add(value != 0 ? (byte)(b | 0x80) : b); } while (value != 0);
        return [.. data.AsSpan(0, at), .. enc, .. data.AsSpan(end + 1)];
    }
}
