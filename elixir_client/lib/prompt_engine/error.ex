defmodule PromptEngine.Error do
  @moduledoc """
  The one error every public function of the client returns, as
  `{:error, %PromptEngine.Error{}}`, and every bang variant raises.

  `reason` is an atom to match on, `message` a sentence for people
  (`Exception.message/1` returns it). Reasons:

    * the sidecar's own: `:bad_request` (the message names the field),
      `:unknown_op`, `:not_found`, `:conflict`, `:unavailable`, `:llm_error`,
      `:insufficient_data`, `:cancelled`, `:internal`, ...
    * the client's: `:bad_request` (a wrong argument shape or an unknown
      option, caught before sending), `:bad_option` (start options),
      `:no_instance` (no instance of that name is running: never started, or
      `details` `:stopped`, `:failed` (its start failed), `:down`),
      `:timeout`, `:overloaded`, `:sidecar_exited` (the sidecar died
      mid-request; `details` is its exit status), `:unavailable` (a restart
      is under way and no sidecar is up within the call's timeout; `details`
      `%{restarts: n, last_exit: status}`, or `:connection_crashed` when the
      connection process ended while the request was with it: it may have
      run, and only tracking calls, whose ids make it safe, are sent
      again), `:shutting_down`, `:bad_reply`;
      and, for a start that failed: `:executable_not_found`,
      `:node_not_found`, `:node_too_old`, `:spawn_failed`, `:bad_handshake`.

  `op` is the op the error belongs to when there is one; `details` carries
  extra data for a few reasons (above).

      iex> {:error, e} = {:error, %PromptEngine.Error{reason: :timeout, message: "no reply within 5000 ms"}}
      iex> Exception.message(e)
      "no reply within 5000 ms"
  """

  defexception reason: :internal, message: "prompt-engine error", op: nil, details: nil

  @type t :: %__MODULE__{reason: atom(), message: String.t(), op: atom() | nil, details: term()}

  @doc """
  Build an error.

      iex> PromptEngine.Error.new(:bad_request, "breadth: expected an integer").reason
      :bad_request
  """
  @spec new(atom(), String.t(), keyword()) :: t()
  def new(reason, message, fields \\ []) when is_atom(reason) and is_binary(message) do
    struct!(%__MODULE__{reason: reason, message: message}, fields)
  end
end
