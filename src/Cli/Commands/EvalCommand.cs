using System.CommandLine;
using System.Text.Json;
using LongCtx.Runtime.Eval;
using Spectre.Console;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc eval MODEL --needle FILE.jsonl [--limit N] [--chunk N] [--json-out F]</c>: greedy next-token accuracy.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "model .onnx or compiled folder" };
        var needle = new Option<FileInfo>("--needle") { Description = "JSONL file: one {\"prompt\": [ids], \"expected\": id} per line", Required = true };
        var limit = new Option<int>("--limit") { Description = "evaluate only the first N prompts (0 = all)", DefaultValueFactory = _ => 0 };
        var chunk = new Option<int>("--chunk") { Description = "prefill chunk size (0 = whole prompt in one call)", DefaultValueFactory = _ => 2048 };
        var jsonOut = new Option<FileInfo?>("--json-out") { Description = "write the result (accuracy, per-prompt predictions) as JSON" };
        var beforeQuestion = new Option<bool>("--evict-before-question") { Description = "models compiled with --kv-evict: compress the cache after the haystack, then feed the question (default: compress with the question, before the last token)" };
        var rt = new RuntimeCliOptions();
        var cmd = new Command("eval", "Needle-retrieval accuracy: argmax of the last-position logits == expected next token") { model, needle, limit, chunk, jsonOut, beforeQuestion };
        rt.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var file = pr.GetValue(needle)!;
            var jsonPath = pr.GetValue(jsonOut) is { } jo ? OutputFiles.Check(jo.FullName, "--json-out") : null;
            if (pr.GetValue(limit) < 0) throw new ArgumentException($"--limit {pr.GetValue(limit)}: give 0 (all) or a positive number of prompts");
            var items = NeedleEval.Read(file.FullName, pr.GetValue(limit));
            if (items.Count == 0) throw new ArgumentException($"{file.FullName}: no prompts (empty needle file); nothing to evaluate");
            using var m = RuntimeCliOptions.Load(pr.GetValue(model)!, rt.Build(pr));
            if (pr.GetValue(beforeQuestion) && m.Evict is null && m.TokenFilter is null)
                throw new ArgumentException($"--evict-before-question: {m.Name} evicts nothing; compile it with lcc compile --kv-evict or --token-filter");
            // GemFilter with the question: the filter's last query is the prompt's own last token (no cut)
            Func<NeedleItem, int>? cut = m.Evict is null && (m.TokenFilter is null || !pr.GetValue(beforeQuestion)) ? null
                : pr.GetValue(beforeQuestion) ? EvictionSplit.BeforeQuestion(EvictionSplit.QueryToken(file.FullName), file.Name) : EvictionSplit.QuestionIncluded;
            NeedleResult? result = null;
            if (Console.IsErrorRedirected)
                result = NeedleEval.Run(m, file.FullName, items, pr.GetValue(chunk), null, ct, cut);
            else
                AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }).Progress()
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask($"eval {file.Name}", maxValue: items.Count);
                        result = NeedleEval.Run(m, file.FullName, items, pr.GetValue(chunk), new Progress<int>(i => task.Value = i), ct, cut);
                    });
            var r = result!;
            Console.Out.WriteLine($"{r.Model}  {r.File}  n={r.N}  correct={r.Correct}  accuracy={r.Accuracy:F3}  chunk={(r.Chunked ? r.Chunk.ToString() : "one-piece")}  {r.Seconds:F1}s");
            if (jsonPath is not null)
                OutputFiles.Write(jsonPath, tmp => File.WriteAllText(tmp, JsonSerializer.Serialize(r, Cli.Json) + "\n"));
            return Cli.Ok;
        })));
        return cmd;
    }
}
