using System.CommandLine;
using System.Text.Json;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Sessions;
using Spectre.Console;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc eval MODEL --needle FILE.jsonl [--limit N] [--chunk N] [--json-out F] [--prefix-cache SIZE]</c>: greedy
/// next-token accuracy; <c>--multi-turn N</c>: N questions per haystack in turns on one cache (<see cref="MultiTurnEval"/>).
/// </summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "model .onnx or compiled folder" };
        var needle = new Option<FileInfo>("--needle") { Description = "JSONL file: one {\"prompt\": [ids], \"expected\": id} per line", Required = true };
        var limit = new Option<int>("--limit") { Description = "evaluate only the first N prompts (0 = all)", DefaultValueFactory = _ => 0 };
        var chunk = new Option<int>("--chunk") { Description = "prefill chunk size (0 = whole prompt in one call)", DefaultValueFactory = _ => 2048 };
        var jsonOut = new Option<FileInfo?>("--json-out") { Description = "write the result (accuracy, per-prompt predictions) as JSON" };
        var multiTurn = new Option<int>("--multi-turn") { Description = "ask N questions about each haystack in turns on one reused KV cache (SCBench style; needs config.json with the key-value vocabulary next to the needle file); prints accuracy and time to first token per turn, reuse vs recompute", DefaultValueFactory = _ => 0 };
        var noRecompute = new Option<bool>("--no-recompute") { Description = "with --multi-turn: skip the recompute baseline (each turn prefilled from scratch)" };
        var beforeQuestion = new Option<bool>("--evict-before-question") { Description = "models compiled with --kv-evict: compress the cache after the haystack, then feed the question (default: compress with the question, before the last token)" };
        var prefix = new PrefixCacheOption();
        var rt = new RuntimeCliOptions();
        var cmd = new Command("eval", "Needle-retrieval accuracy: argmax of the last-position logits == expected next token") { model, needle, limit, chunk, jsonOut, multiTurn, noRecompute, beforeQuestion };
        prefix.AddTo(cmd);
        rt.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var file = pr.GetValue(needle)!;
            var jsonPath = pr.GetValue(jsonOut) is { } jo ? OutputFiles.Check(jo.FullName, "--json-out") : null;
            if (pr.GetValue(limit) < 0) throw new ArgumentException($"--limit {pr.GetValue(limit)}: give 0 (all) or a positive number of prompts");
            int turns = pr.GetValue(multiTurn);
            if (turns < 0) throw new ArgumentException($"--multi-turn {turns}: must be positive");
            var items = NeedleEval.Read(file.FullName, turns > 0 ? 0 : pr.GetValue(limit)); // --multi-turn: --limit counts conversations
            if (items.Count == 0) throw new ArgumentException($"{file.FullName}: no prompts (empty needle file); nothing to evaluate");
            using var m = RuntimeCliOptions.Load(pr.GetValue(model)!, rt.Build(pr));
            if (pr.GetValue(beforeQuestion) && m.Evict is null && m.TokenFilter is null)
                throw new ArgumentException($"--evict-before-question: {m.Name} evicts nothing; compile it with lcc compile --kv-evict or --token-filter");
            var cache = prefix.Build(pr, m);
            if (cache is not null && (m.Evict is not null || m.TokenFilter is not null))
                throw new ArgumentException($"--prefix-cache: {m.Name} evicts or filters prompt tokens (--kv-evict / --token-filter), so its cache is not a reusable prefix; drop --prefix-cache");
            if (turns > 0) return MultiTurn(m, file, items, turns, pr.GetValue(limit), pr.GetValue(chunk), !pr.GetValue(noRecompute), cache, jsonPath, ct);
            // GemFilter with the question: the filter's last query is the prompt's own last token (no cut)
            Func<NeedleItem, int>? cut = m.Evict is null && (m.TokenFilter is null || !pr.GetValue(beforeQuestion)) ? null
                : pr.GetValue(beforeQuestion) ? EvictionSplit.BeforeQuestion(EvictionSplit.QueryToken(file.FullName), file.Name) : EvictionSplit.QuestionIncluded;
            NeedleResult? result = null;
            if (Console.IsErrorRedirected)
                result = NeedleEval.Run(m, file.FullName, items, pr.GetValue(chunk), null, ct, cache, cut);
            else
                AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }).Progress()
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask($"eval {file.Name}", maxValue: items.Count);
                        result = NeedleEval.Run(m, file.FullName, items, pr.GetValue(chunk), new Progress<int>(i => task.Value = i), ct, cache, cut);
                    });
            var r = result!;
            Console.Out.WriteLine($"{r.Model}  {r.File}  n={r.N}  correct={r.Correct}  accuracy={r.Accuracy:F3}  chunk={(r.Chunked ? r.Chunk.ToString() : "one-piece")}  {r.Seconds:F1}s");
            PrefixCacheOption.Report(cache);
            if (jsonPath is not null)
                OutputFiles.Write(jsonPath, tmp => File.WriteAllText(tmp, JsonSerializer.Serialize(r, Cli.Json) + "\n"));
            return Cli.Ok;
        })));
        return cmd;
    }

    private static int MultiTurn(LongCtxModel m, FileInfo file, List<NeedleItem> needles, int turns, int limit, int chunk, bool recompute,
        PrefixCache? cache, string? jsonPath, CancellationToken ct)
    {
        var vocab = RetrievalVocab.Read(Path.Combine(file.DirectoryName ?? ".", LongCtx.Contract.LongCtxFiles.Config));
        var (items, skipped) = MultiTurnEval.Build(needles, vocab, turns, limit);
        if (items.Count == 0)
            throw new ArgumentException($"{file.Name}: no haystack has {turns} keys ({skipped} have fewer); lower --multi-turn");
        string before = MultiTurnReport.Uptime();
        var r = MultiTurnEval.Run(m, file.FullName, vocab, items, turns, skipped, chunk, recompute, cache, null, ct);
        Console.Out.Write(MultiTurnReport.Table(r, before + " before, " + MultiTurnReport.Uptime() + " after"));
        if (jsonPath is not null)
            OutputFiles.Write(jsonPath, tmp => File.WriteAllText(tmp, JsonSerializer.Serialize(r, Cli.Json) + "\n"));
        return Cli.Ok;
    }
}
