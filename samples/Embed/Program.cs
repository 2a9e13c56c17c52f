using LongCtx.Runtime;

// Embedding LongCtx.Runtime: load a folder written by `lcc compile` (or a bare decoder .onnx), stream tokens as they are
// generated, and cancel the generation from the consumer's side.
// usage: LongCtx.Samples.Embed MODEL [MAX_NEW_TOKENS=16] [CANCEL_AFTER=0 (never)]
if (args.Length is < 1 or > 3 || !int.TryParse(args.ElementAtOrDefault(1) ?? "16", out int maxNew) || !int.TryParse(args.ElementAtOrDefault(2) ?? "0", out int cancelAfter))
{
    Console.Error.WriteLine("usage: LongCtx.Samples.Embed MODEL [MAX_NEW_TOKENS] [CANCEL_AFTER]");
    return 2;
}

try
{
    // auto picks TensorRT, then CUDA, then CPU; it says nothing about missing GPU providers unless Verbose is set
    using var model = LongCtxModel.Load(args[0], new RuntimeOptions { ExecutionProvider = ExecutionProviderKind.Auto });
    Console.WriteLine($"model: {model.Name} on {model.Provider}, {model.Contract.Layers.Count} layers, {model.Contract.CacheKind} KV cache");

    // text when the folder has a tokenizer, token ids otherwise (the demo model is id-level)
    IReadOnlyList<int> prompt = model.Tokenizer?.Encode("The quick brown fox") ?? [1, 17, 42, 5, 99, 23, 8, 64];
    Console.WriteLine($"prompt: {string.Join(" ", prompt)}");

    using var generator = model.CreateGenerator();
    using var cancel = new CancellationTokenSource();
    var tokens = new List<int>();
    Console.Write("tokens:");
    try
    {
        await foreach (int token in generator.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = maxNew }, cancel.Token))
        {
            tokens.Add(token);
            Console.Write(model.Tokenizer is { } t ? t.Decode([token]) : $" {token}");
            if (tokens.Count == cancelAfter) cancel.Cancel(); // e.g. the user pressed stop
        }
        Console.WriteLine();
        Console.WriteLine($"done: {tokens.Count} tokens ({generator.LastFinishReason}), {generator.Length} in the KV cache");
    }
    catch (OperationCanceledException)
    {
        Console.WriteLine();
        Console.WriteLine($"cancelled after {tokens.Count} tokens");
    }
    return 0;
}
catch (Exception e) when (e is RuntimeException or IOException or ArgumentException)
{
    Console.Error.WriteLine("embed: error: " + e.Message.ReplaceLineEndings(" "));
    return 1;
}
