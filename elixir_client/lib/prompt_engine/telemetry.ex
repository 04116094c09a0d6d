defmodule PromptEngine.Telemetry do
  @moduledoc """
  The client's `:telemetry` events. They are emitted only when the
  `:telemetry` application is loaded when an instance starts (it is not a
  dependency of this client: add it to your own app); the check is made
  once per instance, never per call.

  ## Requests

  Every public call of `PromptEngine`:

    * `[:prompt_engine, :request, :start]` — measurements `%{system_time, monotonic_time}`,
      metadata `%{op: atom, instance: atom}`
    * `[:prompt_engine, :request, :stop]` — measurements `%{duration, monotonic_time}`
      (native time units), metadata `%{op, instance, result: :ok | :error,
      reason: atom | nil, error: PromptEngine.Error.t() | nil}`
    * `[:prompt_engine, :request, :exception]` — when the call raised: a bang
      variant raising its `PromptEngine.Error`, or an unexpected failure inside
      the client (the non-bang caller then gets `{:error, %Error{reason: :internal}}`);
      measurements `%{duration, monotonic_time}`, metadata `%{op, instance, kind, reason, stacktrace}`

  `cache_clear/1` and `cache_stats/1` are one event each, however many
  sidecars they reach; `report_outcome/3` is a `:track_execution` event.

  ## Sidecar lifecycle

  Each sidecar of an instance's pool (`index` 1..pool_size), like Redix's
  `[:redix, :connection | :disconnection | :failed_connection]`:

    * `[:prompt_engine, :sidecar, :started]` — its ready handshake arrived;
      measurements `%{duration}` (native units, from spawn to ready), metadata
      `%{instance, index, os_pid, restarts}` (`restarts`: how many times this
      sidecar has been restarted since the instance started; 0 the first time)
    * `[:prompt_engine, :sidecar, :exited]` — it exited, or failed to start (no
      handshake within `ready_timeout`, a bad handshake, a spawn error);
      measurements `%{uptime}` (ms since ready; 0 if it never was),
      metadata `%{instance, index, os_pid, status, failed}` (`status`: the
      exit status, or `:ready_timeout`, `:bad_handshake`, `{:spawn_failed, reason}`;
      `failed`: how many in-flight calls got `:sidecar_exited`)
    * `[:prompt_engine, :sidecar, :restarted]` — a new sidecar was spawned
      after an exit, once its backoff delay had passed; measurements `%{delay}` (ms),
      metadata `%{instance, index, attempt, restarts, last_exit}` (`attempt`:
      restarts in a row since a sidecar last stayed up)
    * `[:prompt_engine, :sidecar, :gave_up]` — `max_restarts` restarts in a row
      failed and the connection stopped restarting (never with the default,
      `max_restarts: :infinity`); measurements `%{}`, metadata
      `%{instance, index, restarts, last_exit}`

  Example:

      :telemetry.attach("pe-restarts", [:prompt_engine, :sidecar, :exited], fn _, _, %{instance: i, index: n, status: s}, _ ->
        Logger.warning("prompt-engine \#{inspect(i)} sidecar \#{n} exited: \#{inspect(s)}")
      end, nil)
  """

  @compile {:no_warn_undefined, :telemetry}
  @bang_key {__MODULE__, :raise}

  @doc """
  Whether `:telemetry` is loaded (checked when an instance starts).

      PromptEngine.Telemetry.enabled?()
  """
  @spec enabled?() :: boolean()
  def enabled?, do: Code.ensure_loaded?(:telemetry)

  @doc false
  # A sidecar lifecycle event (see the moduledoc).
  @spec sidecar(boolean(), atom(), map(), map()) :: :ok
  def sidecar(false, _event, _measurements, _metadata), do: :ok
  def sidecar(true, event, measurements, metadata), do: :telemetry.execute([:prompt_engine, :sidecar, event], measurements, metadata)

  @doc false
  # Runs a public call inside the request span; nothing in it raises into the caller unless
  # a bang variant asked for the error to be raised (then :exception is emitted).
  @spec span(atom(), atom(), boolean(), (() -> term())) :: term()
  def span(op, instance, telemetry?, fun) do
    # A bang variant asks for the error to be raised inside the span; the flag is taken
    # here so that nested calls do not see it.
    raise? = Process.delete(@bang_key) == true
    meta = %{op: op, instance: instance}
    t0 = System.monotonic_time()
    if telemetry?, do: :telemetry.execute([:prompt_engine, :request, :start], %{system_time: System.system_time(), monotonic_time: t0}, meta)

    try do
      result = fun.()
      if raise?, do: raise_error(result)

      if telemetry? do
        t1 = System.monotonic_time()
        error = error(result)

        :telemetry.execute(
          [:prompt_engine, :request, :stop],
          %{duration: t1 - t0, monotonic_time: t1},
          Map.merge(meta, %{result: if(error, do: :error, else: :ok), reason: error && error.reason, error: error})
        )
      end

      result
    catch
      kind, reason ->
        stacktrace = __STACKTRACE__

        if telemetry? do
          t1 = System.monotonic_time()

          :telemetry.execute(
            [:prompt_engine, :request, :exception],
            %{duration: t1 - t0, monotonic_time: t1},
            Map.merge(meta, %{kind: kind, reason: reason, stacktrace: stacktrace})
          )
        end

        if raise?,
          do: :erlang.raise(kind, reason, stacktrace),
          else:
            {:error,
             PromptEngine.Error.new(:internal, "prompt-engine client failure: " <> Exception.format_banner(kind, reason, stacktrace), op: op, details: reason)}
    end
  end

  @doc false
  # What a bang variant runs: the value, or the error raised (inside the span, when there is one).
  @spec bang((() -> term())) :: term()
  def bang(fun) do
    Process.put(@bang_key, true)

    try do
      case fun.() do
        :ok -> :ok
        {:ok, value} -> value
        {:error, %PromptEngine.Error{} = e} -> raise e
      end
    after
      Process.delete(@bang_key)
    end
  end

  defp error({:error, %PromptEngine.Error{} = e}), do: e
  defp error(_), do: nil

  defp raise_error({:error, %PromptEngine.Error{} = e}), do: raise(e)
  defp raise_error(_), do: :ok
end
