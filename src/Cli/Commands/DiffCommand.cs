using System.CommandLine;
using System.Text.Json;
using LongCtx.Compiler.Diff;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc diff A B [--json]</c>: deterministic structural diff (never raw weights).</summary>
internal static class DiffCommand
{
    public static Command Create()
    {
        var a = new Argument<FileInfo>("before") { Description = "the original model (.onnx, or a compiled folder)" };
        var b = new Argument<FileInfo>("after") { Description = "the changed model (.onnx, or a compiled folder)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var cmd = new Command("diff", "Structural diff of two models: I/O, opsets, nodes added/removed/changed, initializers by content hash") { a, b, json };
        cmd.SetAction(pr => Cli.Guard(() =>
        {
            var ma = Cli.Load(Resolve(pr.GetValue(a)!));
            var mb = Cli.Load(Resolve(pr.GetValue(b)!));
            var d = ModelDiff.Compare(ma, mb);
            Console.Out.Write(pr.GetValue(json) ? JsonSerializer.Serialize(d, Cli.Json) + "\n" : d.ToText());
            return Cli.Ok;
        }));
        return cmd;
    }

    /// <summary>A compiled output folder stands for its model.onnx.</summary>
    internal static FileInfo Resolve(FileInfo f) =>
        Directory.Exists(f.FullName) ? new FileInfo(Path.Combine(f.FullName, LongCtx.Contract.LongCtxFiles.Model)) : f;
}
