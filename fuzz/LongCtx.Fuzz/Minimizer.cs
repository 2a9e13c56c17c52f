using System.Diagnostics;

namespace LongCtx.Fuzz;

/// <summary>
/// Shrinks a finding to a small input that still fails the same way (same exception type and top LongCtx frame), for
/// committing as a regression test: delta debugging by removal (Zeller and Hildebrandt 2002, ddmin, complement-only):
/// try deleting chunks of len/2, len/4, ... 1 bytes, keep every deletion after which the finding still reproduces.
/// </summary>
internal static class Minimizer
{
    public static int Run(string input, string output)
    {
        var data = File.ReadAllBytes(input);
        var signature = Signature(data);
        if (signature is null) { Console.Error.WriteLine($"fuzz: {input} is not a finding here (it runs as a refusal or ok)"); return 1; }
        var sw = Stopwatch.StartNew();
        int tries = 0;
        for (int chunk = data.Length / 2; chunk >= 1; chunk /= 2)
        {
            for (int at = 0; at + chunk <= data.Length && sw.Elapsed < TimeSpan.FromMinutes(5);)
            {
                byte[] candidate = [.. data.AsSpan(0, at), .. data.AsSpan(at + chunk)];
                tries++;
                if (Signature(candidate) == signature) data = candidate; else at += chunk;
            }
        }
        File.WriteAllBytes(output, data);
        Console.WriteLine($"fuzz: {signature}: {new FileInfo(input).Length} -> {data.Length} bytes in {tries} tries -> {output}");
        return 0;
    }

    /// <summary>"ExceptionType at Type.Method" of the finding <paramref name="data"/> raises, or null when it raises none.</summary>
    public static string? Signature(byte[] data)
    {
        try { FuzzTarget.Run(data); return null; }
        catch (Exception e) { return Describe(e); }
    }

    public static string Describe(Exception e)
    {
        var top = new StackTrace(e).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("LongCtx", StringComparison.Ordinal) == true)?.GetMethod();
        return $"{e.GetType().Name} at {(top is null ? "?" : $"{top.DeclaringType!.Name}.{top.Name}")}";
    }
}
