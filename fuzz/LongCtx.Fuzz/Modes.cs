using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;

namespace LongCtx.Fuzz;

internal static class Modes
{
    public static int Usage()
    {
        Console.Error.WriteLine("usage: LongCtx.Fuzz afl | random SECONDS CORPUS_DIR FINDINGS_DIR [SEED] | seeds OUT_DIR | repro FILE... | minimize IN OUT");
        return 2;
    }

    /// <summary>afl++ via SharpFuzz: each input is read whole and run; a finding escapes and ends the process (afl records it).</summary>
    public static int Afl()
    {
        SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            FuzzTarget.Run(ms.ToArray());
        });
        return 0;
    }

    /// <summary>Seed inputs: every builder form at a tiny size (kilobytes, so afl++ mutates them quickly).</summary>
    public static int Seeds(string dir)
    {
        Directory.CreateDirectory(dir);
        var tiny = new DecoderConfig(Layers: 1, Hidden: 32, Heads: 2, KvHeads: 1, HeadDim: 16, Vocab: 16, MaxPositions: 8, Intermediate: 16);
        foreach (var form in Builders.Forms)
        {
            var c = form is "mha" or "ort-gpt2" ? tiny with { KvHeads = tiny.Heads } : tiny;
            var path = Path.Combine(dir, $"builder-{form}.onnx");
            OnnxWriter.Save(Builders.Build(form, c), path, new SaveOptions { AllInline = true });
            Console.WriteLine($"{path} {new FileInfo(path).Length} bytes");
        }
        return 0;
    }

    public static int Repro(string[] files)
    {
        int findings = 0;
        foreach (var f in files)
        {
            try { Console.WriteLine($"{f}: {FuzzTarget.Run(File.ReadAllBytes(f))}"); }
            catch (Exception e)
            {
                findings++;
                Console.WriteLine($"{f}: FINDING {e.GetType().FullName}: {e.Message.ReplaceLineEndings(" ")}");
                Console.WriteLine(e.StackTrace);
            }
        }
        return findings == 0 ? 0 : 1;
    }
}
