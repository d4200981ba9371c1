"""The known-error database (the regulation's "внутренняя база данных выявленных ошибок", §4–5).

:mod:`.search` finds the incidents a text is about; :mod:`.incidents` changes them and keeps
their history; :mod:`.statuses` names their statuses; :mod:`.views` shows them on the command
line.
"""
