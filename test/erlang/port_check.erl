%% Drives the real sidecar through a real Erlang Port (used by test/port.test.ts).
%% Each check prints one line of Erlang terms the test parses: `result <Term>.`
-module(port_check).
-export([main/1, known_atoms/0]).

%% binary_to_term(_, [safe]) only accepts atoms that exist: the ones the sidecar sends.
known_atoms() ->
    [ready, reply, event, protocol_error, ok, error, os_pid, protocol, version, ops, max_frame_bytes,
     status, node_version, uptime_ms, in_flight, services, cancelled, bad_request, unknown_op, shutting_down,
     %% health's dependency checks
     reasons, checks, database, nats, detail].

open(Exe, fds) ->
    open_port({spawn_executable, Exe}, [binary, {packet, 4}, exit_status, nouse_stdio, {args, ["--port-fds"]}]);
open(Exe, stdio) ->
    open_port({spawn_executable, Exe}, [binary, {packet, 4}, exit_status, use_stdio]).

ready(P) ->
    receive {P, {data, D}} -> {event, ready, Info} = binary_to_term(D, [safe]), Info
    %% the sidecar opens its store and loads its scorer before the handshake (a fresh PGlite takes seconds on a busy machine)
    after 60000 -> erlang:error(no_ready)
    end.

result(T) -> io:format("result ~s~n", [binary:encode_hex(term_to_binary(T))]).

main([Exe, ModeS, Check]) ->
    Mode = list_to_atom(ModeS),
    try run(Exe, Mode, list_to_atom(Check))
    catch C:R:St -> result({crash, C, R, St})
    end,
    halt(0).

%% Frames the sidecar cannot decode but whose head names a request id: a fun, nesting
%% beyond the depth limit, an atom cache reference (only valid between nodes), and a
%% frame over the size limit. Each id must be answered with bad_request, and the
%% sidecar must keep serving.
run(Exe, Mode, undecodable) ->
    P = open(Exe, Mode),
    #{os_pid := _, max_frame_bytes := Max} = ready(P),
    F = fun() -> ok end,
    Deep = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 20000)),
    %% {req, 13, echo, #{a => <atom cache ref 0>}}: patch the atom `x` (SMALL_ATOM_UTF8) into ATOM_CACHE_REF
    Good = term_to_binary({req, 13, echo, #{a => x}}, [{minor_version, 2}]),
    [Before, After] = binary:split(Good, <<119, 1, $x>>),
    CacheRef = <<Before/binary, 82, 0, After/binary>>,
    port_command(P, term_to_binary({req, 11, echo, #{f => F}})),
    port_command(P, term_to_binary({req, 12, echo, #{d => Deep}})),
    port_command(P, CacheRef),
    port_command(P, term_to_binary({req, 14, echo, #{b => binary:copy(<<0>>, Max + 1)}})),
    port_command(P, term_to_binary({req, 15, echo, #{still => serving}})),
    Replies = collect(P, [11, 12, 13, 14, 15], #{}),
    result({undecodable, [maps:get(I, Replies, missing) || I <- [11, 12, 13, 14, 15]]});

%% 100 processes, 100 pipelined echo requests each; the owner routes replies by id.
run(Exe, Mode, pipelined) ->
    P = open(Exe, Mode),
    #{os_pid := _} = ready(P),
    Self = self(),
    NProcs = 100, PerProc = 100,
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> worker(Self, P, W, PerProc) end) || W <- lists:seq(1, NProcs)],
    route(P, maps:from_list([{W, Pid} || {W, Pid} <- lists:zip(lists:seq(1, NProcs), Pids)]), NProcs * PerProc),
    Results = [receive {done, Pid, R} -> R after 20000 -> timeout end || Pid <- Pids],
    T1 = erlang:monotonic_time(microsecond),
    Ok = length([x || {ok, _} <- Results]),
    Matched = lists:sum([N || {ok, N} <- Results]),
    port_close(P),
    result({pipelined, Ok, Matched, (T1 - T0) div 1000});

%% A slow request (1.5 s) does not delay 50 fast ones sent after it.
run(Exe, Mode, slow_fast) ->
    P = open(Exe, Mode),
    ready(P),
    T0 = erlang:monotonic_time(millisecond),
    port_command(P, term_to_binary({req, 1, echo, #{delay_ms => 1500}})),
    [port_command(P, term_to_binary({req, I, echo, #{i => I}})) || I <- lists:seq(2, 51)],
    Order = [receive {P, {data, D}} -> {reply, Id, {ok, _}} = binary_to_term(D, [safe]), {Id, erlang:monotonic_time(millisecond) - T0}
             after 5000 -> timeout end || _ <- lists:seq(1, 51)],
    port_close(P),
    {LastId, SlowAt} = lists:last(Order),
    FastMax = lists:max([T || {Id, T} <- Order, Id =/= 1]),
    result({slow_fast, LastId, SlowAt, FastMax});

%% {cancel, Id} reaches the handler's AbortSignal: the 5 s request ends at once as cancelled.
run(Exe, Mode, cancel) ->
    P = open(Exe, Mode),
    ready(P),
    port_command(P, term_to_binary({req, 7, echo, #{delay_ms => 5000}})),
    timer:sleep(100),
    T0 = erlang:monotonic_time(millisecond),
    port_command(P, term_to_binary({cancel, 7})),
    R = receive {P, {data, D}} -> binary_to_term(D, [safe]) after 3000 -> timeout end,
    Dt = erlang:monotonic_time(millisecond) - T0,
    %% still serving afterwards
    port_command(P, term_to_binary({req, 8, health, #{}})),
    H = receive {P, {data, D2}} -> {reply, 8, {ok, #{status := S}}} = binary_to_term(D2, [safe]), S after 3000 -> timeout end,
    port_close(P),
    result({cancel, R, Dt, H});

%% Port closed (input EOF): the sidecar drains in-flight work and exits 0.
run(Exe, Mode, eof) ->
    P = open(Exe, Mode),
    #{os_pid := OsPid} = ready(P),
    port_command(P, term_to_binary({req, 1, echo, #{delay_ms => 300}})),
    timer:sleep(50),
    T0 = erlang:monotonic_time(millisecond),
    port_close(P),
    Gone = wait_gone(OsPid, 3000),
    result({eof, Gone, erlang:monotonic_time(millisecond) - T0});

%% Open a port, keep the sidecar's event loop busy, print its os pid, then wait to be killed.
run(Exe, Mode, hold_busy) -> run(Exe, Mode, hold_spin);
%% the event loop blocked by a spinning op
run(Exe, Mode, hold_spin) ->
    P = open(Exe, Mode),
    #{os_pid := OsPid} = ready(P),
    port_command(P, term_to_binary({req, 1, echo, #{spin_ms => 8000}})),
    port_command(P, term_to_binary({req, 2, echo, #{delay_ms => 8000}})),
    result({os_pid, OsPid}),
    timer:sleep(60000);
%% a long optimization in progress
run(Exe, Mode, hold_optimize) ->
    P = open(Exe, Mode),
    #{os_pid := OsPid} = ready(P),
    port_command(P, term_to_binary({req, 1, optimize_prompt, #{prompt => <<"Write a {{language}} function that parses {{context}} and reports errors.">>, breadth => 50, depth => 10, cache => false}})),
    result({os_pid, OsPid}),
    timer:sleep(60000);
%% 500 requests in flight
run(Exe, Mode, hold_inflight) ->
    P = open(Exe, Mode),
    #{os_pid := OsPid} = ready(P),
    [port_command(P, term_to_binary({req, I, echo, #{delay_ms => 8000, i => I}})) || I <- lists:seq(1, 500)],
    result({os_pid, OsPid}),
    timer:sleep(60000).

collect(_P, [], Acc) -> Acc;
collect(P, Want, Acc) ->
    receive
        {P, {data, D}} ->
            case binary_to_term(D) of
                {reply, Id, R} -> collect(P, lists:delete(Id, Want), Acc#{Id => R});
                {event, protocol_error, _} -> collect(P, Want, Acc)
            end
    after 10000 -> Acc
    end.

worker(Owner, P, W, N) ->
    Ids = [W * 1000 + K || K <- lists:seq(1, N)],
    [port_command(P, term_to_binary({req, Id, echo, #{id => Id, w => W, f => 1.0, s => <<"héllo"/utf8>>}})) || Id <- Ids],
    Got = [receive {reply, Id, {ok, #{id := Id, w := W, f := F, s := <<"héllo"/utf8>>}}} when is_float(F) -> 1
           after 15000 -> 0 end || Id <- Ids],
    Owner ! {done, self(), case lists:sum(Got) of N -> {ok, N}; M -> {short, M} end}.

route(_P, _Workers, 0) -> ok;
route(P, Workers, Left) ->
    receive
        {P, {data, D}} ->
            {reply, Id, _} = Msg = binary_to_term(D, [safe]),
            maps:get(Id div 1000, Workers) ! Msg,
            route(P, Workers, Left - 1)
    after 20000 -> timeout
    end.

wait_gone(OsPid, Ms) when Ms =< 0 -> alive(OsPid) =:= false;
wait_gone(OsPid, Ms) ->
    case alive(OsPid) of
        false -> true;
        true -> timer:sleep(20), wait_gone(OsPid, Ms - 20)
    end.

alive(OsPid) -> filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) andalso not zombie(OsPid).
zombie(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, B} -> [_, Rest] = binary:split(B, <<") ">>), binary:first(Rest) =:= $Z;
        _ -> true
    end.
