using System.CommandLine;
using LongCtx.Cli.Commands;

namespace LongCtx.Cli;

public static class Program
{
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    /// <summary>The whole command tree (tests invoke it in-process).</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("lcc — LongCtx: compile exported ONNX decoders for long context, and run them.");
        root.Add(InspectCommand.Create());
        root.Add(CompileCommand.Create());
        root.Add(CalibrateCommand.Create());
        root.Add(DiffCommand.Create());
        root.Add(DemoCommand.Create());
        root.Add(EvalCommand.Create());
        root.Add(BenchCommand.Create());
        root.Add(KernelsBenchCommand.Create());
        root.Add(RunCommand.Create());
        return root;
    }
}
