using System.CommandLine;
using LongCtx.Cli.Commands;

namespace LongCtx.Cli;

public static class Program
{
    public static int Main(string[] args) => Run(args);

    /// <summary>Runs lcc. The last line of defence (issue 14, "no .NET stack trace anywhere, ever"): commands turn the
    /// failures they expect into "lcc: error: ..." (<see cref="Commands.Cli.Guard"/>); anything else that escapes prints
    /// one line "lcc: internal error: TYPE: MESSAGE; run with -v for details", and the stack only with -v.</summary>
    public static int Run(string[] args)
    {
        try
        {
            var parsed = BuildRoot().Parse(args);
            if (parsed.Errors.Count > 0 && args.Length > 0)
            {
                // One line, not the usage text: "lcc: error: ...; see lcc COMMAND --help".
                var cmd = parsed.CommandResult.Command;
                string command = cmd == parsed.RootCommandResult.Command ? "lcc" : "lcc " + cmd.Name;
                string more = parsed.Errors.Count > 1 ? $" (and {parsed.Errors.Count - 1} more)" : "";
                // the most specific error first: one that quotes the token it is about
                var first = parsed.Errors.FirstOrDefault(e => e.Message.Contains('\'')) ?? parsed.Errors[0];
                Console.Error.WriteLine($"lcc: error: {Commands.Cli.OneLine(first.Message).TrimEnd('.')}{more}; see {command} --help");
                return Commands.Cli.Failure;
            }
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("lcc: cancelled");
            return 130;
        }
        catch (Exception e)
        {
            return ReportInternalError(e, args.Any(a => a is "-v" or "--verbose"), Console.Error);
        }
    }

    /// <summary>Prints an unexpected exception as one line (the stack after it only when <paramref name="verbose"/>).</summary>
    public static int ReportInternalError(Exception e, bool verbose, TextWriter error)
    {
        var inner = e is AggregateException { InnerExceptions.Count: 1 } a ? a.InnerException! : e;
        error.WriteLine($"lcc: internal error: {inner.GetType().Name}: {Commands.Cli.OneLine(inner.Message)}" + (verbose ? "" : "; run with -v for details"));
        if (verbose) error.WriteLine(inner.ToString());
        return InternalError;
    }

    /// <summary>Exit code of an internal error (EX_SOFTWARE).</summary>
    public const int InternalError = 70;

    /// <summary>The whole command tree (tests invoke it in-process).</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("lcc — LongCtx: compile exported ONNX decoders for long context, and run them.");
        root.Add(new Option<bool>("--verbose", "-v") { Description = "on an internal error, print the full exception and stack trace", Recursive = true });
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
