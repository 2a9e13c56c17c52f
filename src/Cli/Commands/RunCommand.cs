using System.CommandLine;
using LongCtx.Runtime;
using LongCtx.Runtime.Sessions;
using Spectre.Console;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc run MODEL --prompt TEXT | --prompt-ids 1,2,3 | --prompt-file F [--max-new-tokens N] [--load-kv F] [--save-kv F [--kv-codec C]]</c>: streams generated
/// tokens (ids, or text when the model folder has a tokenizer); a progress bar shows long prefills.
/// </summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "model .onnx or compiled folder" };
        var prompt = new Option<string?>("--prompt") { Description = "prompt text (needs a tokenizer in the model folder)" };
        var ids = new Option<string?>("--prompt-ids") { Description = "prompt token ids, e.g. 1,2,3" };
        var file = new Option<FileInfo?>("--prompt-file") { Description = "file with token ids (comma/space separated), or text when the model has a tokenizer" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 32 };
        var chunk = new Option<int>("--chunk") { Description = "prefill chunk size (0 = one piece)", DefaultValueFactory = _ => 2048 };
        var temp = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "sample among the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var stop = new Option<string?>("--stop-ids") { Description = "token ids that end generation, e.g. 2" };
        var prefix = new PrefixCacheOption();
        var rt = new RuntimeCliOptions();
        var kv = new KvStoreCliOptions();
        var cmd = new Command("run", "Generate from a prompt, streaming tokens") { model, prompt, ids, file, maxNew, chunk, temp, topK, topP, seed, stop };
        prefix.AddTo(cmd);
        rt.AddTo(cmd);
        kv.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            int given = (pr.GetValue(prompt) is null ? 0 : 1) + (pr.GetValue(ids) is null ? 0 : 1) + (pr.GetValue(file) is null ? 0 : 1);
            if (given != 1) throw new ArgumentException("give exactly one of --prompt, --prompt-ids, --prompt-file");
            // The prompt file is read (checked, capped) before the model is loaded: a bad file fails fast.
            var fileContent = pr.GetValue(file) is { } pf ? ReadPromptFile(pf) : null;
            using var m = RuntimeCliOptions.Load(pr.GetValue(model)!, rt.Build(pr));
            var tokens = PromptTokens(m, pr.GetValue(prompt), pr.GetValue(ids), fileContent);
            var opts = new GenerationOptions
            {
                MaxNewTokens = pr.GetValue(maxNew), Chunk = pr.GetValue(chunk), Temperature = pr.GetValue(temp),
                TopK = pr.GetValue(topK), TopP = pr.GetValue(topP), Seed = pr.GetValue(seed),
                StopTokens = pr.GetValue(stop) is { } st ? RuntimeCliOptions.ParseIds(st) : [],
            };
            var cache = prefix.Build(pr, m);
            using var conv = kv.CreateConversation(m, pr, cache); // the session restores and stores prefix-cache blocks
            Stream(m, conv, tokens, opts, ct).GetAwaiter().GetResult();
            Console.Error.WriteLine($"lcc: {tokens.Count} prompt tokens, finished: {conv.LastFinishReason}");
            PrefixCacheOption.Report(cache);
            kv.SaveIfAsked(conv, pr);
            return Cli.Ok;
        })));
        return cmd;
    }

    /// <summary>Largest prompt file read (a million-token prompt of text is a few MiB).</summary>
    private const long PromptFileCap = 64L << 20;

    private static string ReadPromptFile(FileInfo file)
    {
        if (!file.Exists && !Directory.Exists(file.FullName) && file.LinkTarget is null) throw new FileNotFoundException($"prompt file {file.FullName} not found");
        return LongCtx.Contract.SafeFile.ReadText(file.FullName, PromptFileCap, what: $"prompt file {file.FullName}");
    }

    private static IReadOnlyList<int> PromptTokens(LongCtxModel m, string? text, string? ids, string? content)
    {
        if (ids is not null) return RuntimeCliOptions.ParseIds(ids);
        if (content is not null)
        {
            if (content.All(c => char.IsAsciiDigit(c) || c is ',' or ' ' or '\n' or '\r' or '\t'))
                return RuntimeCliOptions.ParseIds(content);
            text = content;
        }
        if (m.Tokenizer is null)
            throw new ArgumentException($"{m.Name}: the model has no tokenizer (no tokenizer.json or tokenizer.model in its folder); it is id-level, use --prompt-ids or --prompt-file with ids");
        return m.Tokenizer.Encode(text!);
    }

    private static async Task Stream(LongCtxModel m, Conversation conv, IReadOnlyList<int> tokens, GenerationOptions opts, CancellationToken ct)
    {
        bool bar = !Console.IsErrorRedirected && opts.Chunk > 0 && tokens.Count > opts.Chunk && m.SupportsChunkedPrefill;
        ProgressTask? task = null;
        var progress = bar ? new Progress<int>(i => { if (task is not null) task.Value = i; }) : null;
        await using var e = conv.GenerateAsync(tokens, opts, ct, progress).GetAsyncEnumerator(ct);
        bool has;
        if (bar)
        {
            // the bar covers prefill: it completes when the first token arrives
            var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            has = await err.Progress().StartAsync(async ctx =>
            {
                task = ctx.AddTask("prefill", maxValue: tokens.Count);
                bool first = await e.MoveNextAsync();
                task.Value = tokens.Count;
                return first;
            });
        }
        else has = await e.MoveNextAsync();
        for (int n = 0; has; n++)
        {
            Console.Out.Write(m.Tokenizer is { } tk ? tk.Decode([e.Current]) : (n > 0 ? " " : "") + e.Current);
            Console.Out.Flush();
            has = await e.MoveNextAsync();
        }
        Console.Out.WriteLine();
    }
}
