"""The level of a new request (regulation, "уровни оказания помощи"): what the customer asks
support to do. ОП1: normal operation, installation, set-up, typical procedures; ОП2: files or
data to send or receive; ОП3: abnormal work, a failure, an outage; ОП4 never at intake."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from mailbot.config import ClassifyConfig, ConfigError, load_config
from mailbot.parsers.model import MailKind, ParsedMail
from mailbot.rules.base import Context
from mailbot.rules.level import Assessment, LevelClassification, assess
from mailbot.rules.verdict import Action, Verdict

from tests import levelset

CONFIG = ClassifyConfig()


def level(text: str, config: ClassifyConfig = CONFIG) -> int:
    """The level of a mail whose subject is the first line of ``text``."""
    return assess(text, config).level


# ---------------------------------------------------------------- the levels


@pytest.mark.parametrize("text", [
    "Привязка объекта\nСкриншот окна ниже. Как привязать новый объект к шаблону?",
    "Права оператора\nНужно настроить права так, чтобы оператор работал без квитирования аварий",
    "Квитирование\nКак настроить квитирование аварий, чтобы диспетчер квитировал только свои?",
    "Перепривязка\nНеобходимо выполнить перепривязки контроллеров, подскажите порядок",
    "Линковка\nПодскажите порядок линковки тегов после импорта",
    "Установка на Linux\nПланируем установить сервер опроса на Astra Linux. Какие требования?",
    "Вопрос\nМожно ли вывести тренды на второй монитор?",
    "Порты\nКакие порты открыть на межсетевом экране для удалённых АРМ?",
    "Уставки\nгде задаются уставки аварий по давлению",
    "Alarm e-mails\nHow do I configure e-mail notifications for alarms?",
])
def test_op1_is_a_question_on_normal_operation_setup_or_a_typical_procedure(text):
    assert level(text) == 1


@pytest.mark.parametrize("text", [
    "руководство\nвышлите руководство оператора пожалуйста",
    "драйвер\nНужен драйвер ключа защиты под Windows 11, на сайте не нашли",
    "Дистрибутив\nПрошу выслать актуальный дистрибутив АРМ диспетчера версии 4.3",
    "Лицензия\nНужен файл лицензии на дополнительные 3 АРМ",
    "Информационное письмо\nПросим направить информационное письмо о совместимости с Astra Linux",
    "Сборка под Astra\nЕсть ли сборка под Astra Linux 1.7? Если есть, пришлите.",
    "можно ли получить\nможно ли получить свежую сборку клиента под линукс?",
    "Отправляем логи\nВысылаем лог-файлы сервера за 10–12 марта, как просил ваш специалист. "
    "Подтвердите получение.",
    "Installation package\nPlease send us the latest installation package and the release notes.",
])
def test_op2_is_a_file_or_document_to_send_or_receive(text):
    assert level(text) == 2


@pytest.mark.parametrize("text", [
    "Сервер опроса перезапускается\nПосле установки обновлений сервер опроса перезапускается "
    "каждые 10 минут. Логи прикладываю.",
    "АРМ зависает\nПри открытии мнемосхемы АРМ диспетчера зависает намертво",
    "Вылетает\nПри формировании отчёта программа вылетает",
    "Пропали данные\nЗа период с 12 по 15 марта пропали данные в архиве по ЦТП-5",
    "Тренды пустые\nТренды по всем параметрам пустые. Скриншот во вложении.",
    "crash\nClient crashes on startup with error 0xc0000005",
    "не пашет опрос\nс утра не пашет опрос все объекты серые",
    "СРОЧНО\nНИЧЕГО НЕ РАБОТАЕТ, ВСЁ КРАСНОЕ",
    "слетела лицензия\nпосле перезагрузки сервера слетела лицензия, пишет демо режим",
    "Не квитируются аварии\nНажимаем «Квитировать» — авария остаётся неквитированной",
    "тупит сервер\nсервер тупит, загрузка процессора 100%",
    "Значения заморожены\nна мнемосхеме ЦТП-2 все значения заморожены",
])
def test_op3_is_abnormal_work_a_failure_or_an_outage(text):
    assert level(text) == 3


def test_op4_is_never_assigned_at_intake():
    assert level("Критический сбой\nполный отказ, не предусмотрено инструкциями") == 3
    assert all(level(s.mail.problem) in (1, 2, 3) for s in levelset.load()[:50])


# ---------------------------------------------------------------- what decides


@pytest.mark.parametrize("text, expected", [
    ("Привязка\nСкриншот окна ниже. Как привязать объект к шаблону?", 1),
    ("Подробное логирование\nЛог прикладываю. Как включить подробное логирование?", 1),
    ("Проверка\nСкриншот настроек прикладываю. Правильно ли настроен опрос?", 1),
    ("Вылетает\nСкриншот и лог прикладываю: АРМ вылетает при открытии трендов", 3),
])
def test_material_in_support_of_the_question_does_not_set_the_level(text, expected):
    assert level(text) == expected


@pytest.mark.parametrize("text", [
    "Настройка\nУстановка прошла без ошибок, теперь как настроить опрос?",
    "Ошибка в документации?\nВ руководстве указан порт 5433, а у нас 5432. Это ошибка в "
    "документации?",
    "Удалили объект\nДиспетчер по ошибке удалил объект со схемы. Как его вернуть?",
    "Журнал сбоев связи\nКак посмотреть журнал сбоев связи с приборами за месяц?",
    "Резервирование\nКак настроить резервный сервер, чтобы при отказе основного работал он?",
    "Модем\nМожно ли настроить, чтобы при зависании модема он перезагружался сам?",
    "Автозапуск после сбоя питания\nЧто нужно настроить, чтобы сервер запускался сам?",
    "Перенос\nКакой порядок переноса сервера, чтобы не потерять архивы?",
    "Красная рамка\nЧто означает красная рамка у объекта на схеме?",
])
def test_failure_words_in_a_non_failure_sense_are_no_failure(text):
    assert level(text) == 1


@pytest.mark.parametrize("text", [
    "Сервер опроса падает\nСервер опроса падает 2-3 раза в день. Пришлите патч, если есть.",
    "АРМ вылетает\nАРМ вылетает при открытии трендов. Может, нужен свежий дистрибутив? Вышлите.",
    "Проблема с лицензией\nСистема перестала видеть лицензию. Пришлите новый файл лицензии.",
    "Прошу патч\nПосле обновления до 3.5.2 падает сервер опроса раз в несколько часов. Если есть "
    "исправление — пришлите патч, пожалуйста.",
])
def test_a_failure_with_a_request_for_a_file_is_op3(text):
    """Mixed intent: the failure is what must be solved (known-error search, incident)."""
    assert level(text) == 3


@pytest.mark.parametrize("text", [
    "Инструкция по перепривязке\nПришлите инструкцию по перепривязке лицензии",
    "инструкция\nВышлите инструкцию, что делать диспетчеру при сбое питания сервера",
    "Коды ошибок\nНужна документация по кодам ошибок сервера опроса",
    "Патч\nПришлите патч, исправляющий ошибку из информационного письма №45",
    "Ссылка не работает\nСсылка на скачивание обновления из вашего письма не открывается (404)",
    "Не дошло письмо\nВы отправили дистрибутив, но письмо к нам не пришло. Отправьте повторно.",
])
def test_a_document_named_for_its_topic_or_a_delivery_problem_is_op2(text):
    """The topic of a requested document, and a problem with what support sent, are no
    request of their own: the request is the document or the file."""
    assert level(text) == 2


@pytest.mark.parametrize("text", [
    "котельная 5\nЦифры на мнемосхеме котельной не меняются с утра",
    "Серые значения\nПосле перезагрузки сервера АРМ показывает серые значения по всем объектам",
    "отчет\nв суточном отчёте за ночь нули по всем узлам",
    "Сервер опроса\nПосле установки обновлений сервер опроса перезапускается каждые 10 минут",
    "тренды\nПочему не строятся тренды за вчерашний день?",
    "Редактор\nПосле обновления до 3.6 перестал открываться редактор мнемосхем",
    "SMS\nSMS дежурным больше не приходят, модем горит зелёным",
    "ни обновляется\nзначения ни обновляются на схеме второй час",
    "Веб-клиент\nВ веб-клиенте вместо значений знаки вопроса",
    "Память\nСервер опроса за сутки разрастается до 8 Гб памяти. Это нормально?",
    "Trends\nThe trends window doesn't update since the upgrade",
])
def test_a_symptom_without_a_failure_word_is_op3(text):
    """What the system does not do ("не меняются", "не строятся"), what it shows instead,
    since when and how often: a symptom is a failure report, whatever its words."""
    assert level(text) == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("Рассылка\nНе знаем, как настроить рассылку SMS дежурным", 1),
    ("Руководство\nНе нашли на сайте руководство по OPC UA, пришлите", 2),
    ("Пользователи\nНе подскажете, как добавить пользователя только для просмотра?", 1),
    ("Архив\nСервер работает, данные не пропадают. Как увеличить глубину архива?", 1),
    ("Патч\nПришлите патч из письма №45, у нас ошибка пока не проявлялась", 2),
    ("Обновление\nНе сломается ли опрос, если обновить клиентов раньше сервера?", 1),
])
def test_a_negated_verb_of_knowing_wanting_or_a_negated_failure_is_no_symptom(text, expected):
    assert level(text) == expected


@pytest.mark.parametrize("text", [
    "Сервер опроса\nПосле установки обновлений сервер опроса перезапускается каждые 10 минут",
    "Перенос базы\nПри переносе базы на новый сервер выдаёт ошибку доступа",
    "OPC\nКлиент получает Bad quality по всем тегам. Началось после установки антивируса.",
])
def test_the_circumstances_of_a_failure_do_not_make_it_a_question(text):
    """«после установки», «при переносе»: when it happened, not what is asked."""
    found = assess(text, CONFIG)
    assert found.level == 3 and not any(c in ("установки", "переносе") for c in found.cues_of(1))


def test_a_question_after_a_failure_report_is_about_that_failure():
    text = ("давление\nдавление на схеме показывает 0 а по манометру 5.2 атм. датчик меняли в "
            "пятницу, может в настройках что-то надо поменять?")
    assert level(text) == 3
    assert level(text, ClassifyConfig(after_failure_factor=1.0)) == 1


def test_in_doubt_between_a_question_and_a_failure_the_failure_is_proposed():
    """A missed failure is the costly error: ТП1 confirms (#уровень) either way."""
    text = "Красная рамка\nЧто означает красная рамка у объекта на схеме — это авария или нет связи?"
    found = assess(text, CONFIG)
    assert (found.level, found.unsure, found.candidates) == (3, True, (3, 1))
    other = assess(text, ClassifyConfig(doubt_to_failure=False))
    assert (other.level, other.unsure, other.candidates) == (1, True, (1, 3))


def test_a_forwarded_mail_is_read_whole():
    """What a forwarded mail forwards is the problem, not history to drop."""
    sample = levelset.Sample("x:0", 3, "Fw: панель в диспетчерской", (
        "Пересылаю письмо главного инженера.\n\n-------- Пересылаемое сообщение --------\n"
        "От: Кузнецов В.П.\nКоллеги, на панели в диспетчерской цифры старые, со вчерашнего "
        "вечера не обновлялись, разберитесь.\n"))
    assert "не обновлялись" in sample.mail.problem
    assert level(sample.mail.problem) == 3


def test_the_subject_and_first_sentences_weigh_more_than_the_rest():
    early = assess("Зависает АРМ\nПодскажите.", CONFIG)
    late = assess("Вопрос\n" + "Работаем. " * 7 + "Зависает АРМ.", CONFIG)
    assert early.scores[2] > late.scores[2]
    body = assess("\nАРМ зависает. Подскажите.", CONFIG)
    assert early.scores[2] > body.scores[2]


def test_signatures_and_quotes_do_not_count():
    text = ("Пользователи\nКак добавить нового пользователя?\n\nС уважением,\nИванов И.И.\n"
            "Начальник службы устранения аварий и сбоев\n> АРМ не работает, всё упало")
    assert level(text) == 1
    assert assess(text, CONFIG).cues_of(3) == []


def test_through_the_parser_quoted_history_does_not_count():
    """A new request's own text decides, not the history quoted below it."""
    sample = levelset.Sample("x:0", 1, "Re: Вебинар", "Спасибо. Как сделать избранные объекты?\n\n"
                             "Пн, 1 дек. 2026 г. в 10:00, Поддержка <s@t.example> пишет:\n"
                             "> Сервер не работает, ошибка, всё зависло, пропали данные.\n")
    assert level(sample.mail.problem) == 1


# ---------------------------------------------------------------- unsure


def test_a_request_without_any_cue_is_a_possible_failure_and_unsure():
    found = assess("Обращение\nЗдравствуйте, у нас тут такое дело.", CONFIG)
    assert (found.level, found.unsure) == (3, True)
    assert set(found.candidates) == {1, 2, 3} and found.candidates[0] == 3


def test_weak_cues_leave_the_level_unsure():
    found = assess("Звонок\nпозвоните мне", CONFIG)
    assert found.unsure and found.level == 3 and 1 in found.candidates


def test_close_scores_are_unsure_and_name_both_levels():
    found = assess("Лицензия\nЛицензия слетела? Пришлите новый файл лицензии, пожалуйста.", CONFIG)
    assert found.unsure and set(found.candidates) == {2, 3}


def test_a_clear_request_is_sure():
    assert not assess("АРМ зависает\nАРМ зависает каждые полчаса, не работает ничего",
                      CONFIG).unsure
    assert not assess("руководство\nвышлите руководство оператора", CONFIG).unsure


def test_the_reason_names_the_customers_words():
    found = assess("Сервер падает\nСервер падает каждый час. Пришлите патч.", CONFIG)
    assert found.cues_of(3)[0] == "падает"
    assert "пришлите … патч" in found.cues_of(2)
    assert found.reason.startswith("ОП3 (ОП1 ") and "ОП3: падает" in found.reason
    assert Assessment.from_details(found.details()) == found


# ---------------------------------------------------------------- the rule


def mail(subject: str, text: str) -> ParsedMail:
    return ParsedMail(
        message_id="m1@example.test", in_reply_to=(), references=(), subject=subject,
        from_addr="ivanov@zavod.example", from_name="", reply_to=None, to=(), cc=(), date=None,
        return_path=None, text=text, html=None, new_text=text, attachments=(),
        kind=MailKind.HUMAN, kind_reason="", request_numbers=(), incident_numbers=())


def context() -> Context:
    no_lookup = None  # the rule reads no register
    return Context(load_config(None, environ={}), no_lookup, datetime.now(timezone.utc))


def test_the_rule_sets_the_level_of_a_new_request_with_its_reason():
    verdict = Verdict()
    LevelClassification().check(mail("Сбой сервера", "Добрый день, см. скриншот"), verdict, context())
    assert verdict.level == 3 and verdict.level_assessment.level == 3
    assert verdict.level_reason == verdict.level_assessment.reason
    assert verdict.reasons == ["level-classification: " + verdict.level_reason]


def test_the_rule_leaves_replies_to_a_request_alone():
    verdict = Verdict(action=Action.APPEND)
    LevelClassification().check(mail("Re: сбой", "Всё ещё не работает"), verdict, context())
    assert verdict.level is None and verdict.level_assessment is None and verdict.reasons == []


# ---------------------------------------------------------------- config


def test_cues_and_weights_come_from_config(tmp_path):
    path = tmp_path / "mailbot.toml"
    path.write_text('[classify]\nop2_cues = ["выгрузка данных = 4"]\n'
                    'default_level = 1\n', encoding="utf-8")
    config = load_config(path, environ={"MAILBOT_CLASSIFY_OP3_CUES": "глючит = 3,=висит = 3"})
    assert config.classify.op3_cues == ("глючит = 3", "=висит = 3")
    found = assess("Выгрузка\nНужна выгрузка данных", config.classify)
    assert (found.level, found.cues_of(2)[0]) == (2, "выгрузка данных")
    assert level("Беда\nвсё висит", config.classify) == 3
    assert level("Вопрос\nЗдравствуйте", config.classify) == 1  # default_level


@pytest.mark.parametrize("setting, message", [
    ('op3_cues = ["лог-файл"]', r"^classify\.op3_cues: 'лог-файл': .*not one word"),
    ('op1_cues = ["= 2"]', r"^classify\.op1_cues: '= 2': "),
    ("default_level = 4", r"^classify\.default_level: expected 1, 2 or 3"),
    ("min_margin = 2", r"^classify\.min_margin: expected a number from 0 to 1"),
    ("op3_bias = 0", r"^classify\.op3_bias: must be positive"),
])
def test_a_wrong_classify_setting_names_the_key(tmp_path, setting, message):
    path = tmp_path / "mailbot.toml"
    path.write_text(f"[classify]\n{setting}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


# ---------------------------------------------------------------- the labelled set


def test_the_labelled_set_is_large_and_varied():
    samples = levelset.load()
    assert len(samples) >= 300
    assert all(sum(s.level == lvl for s in samples) >= 80 for lvl in (1, 2, 3))
    texts = [f"{s.subject}\n{s.body}" for s in samples]
    assert sum(len(t) < 80 for t in texts) >= 30 and sum(len(t) > 400 for t in texts) >= 10
    assert sum(not any(c in t for c in ".,!?") for t in texts) >= 10  # no punctuation
    assert sum(any("a" <= c <= "z" for c in t.lower()) for t in texts) >= 20  # Latin words
    assert len({s.id for s in samples}) == len(samples)
    assert 0.1 < sum(s.split == "check" for s in samples) / len(samples) < 0.3


@pytest.mark.parametrize("split", ["tune", "check"])
def test_the_labelled_set_meets_the_targets(split):
    """Targets of issue 16: accuracy ≥ 90 %, ОП3 recall ≥ 95 % (the check split is never
    looked at while tuning; benchmarks/classify.py prints the figures)."""
    samples = [s for s in levelset.load() if s.split == split]
    found = [assess(s.mail.problem, CONFIG) for s in samples]
    figures = levelset.measure(samples, [(a.level, a.unsure) for a in found])
    assert figures.accuracy >= 0.9 and figures.recall(3) >= 0.95


def test_a_thousand_mails_are_classified_in_seconds_not_minutes():
    """A guard against a pathological cost only (the figures: benchmarks/classify.py); the
    bound leaves room for a loaded CI machine."""
    samples = levelset.load()
    texts = [f"{s.mail.problem}\n{i}. С уважением, Иванов Иван, ООО «Завод», тел. +7 495 000-{i:04d}"
             for i, s in enumerate(samples * 2)][:1000]
    work = assess.__wrapped__  # not the cache of repeated texts
    work(texts[0], CONFIG)  # the cues are compiled once per config
    started = time.perf_counter()
    for text in texts:
        work(text, CONFIG)
    assert time.perf_counter() - started < 3.0


def test_a_huge_text_costs_no_more_than_its_start():
    """No single mail stops intake: a megabyte of text is read only as far as its request."""
    words = " ".join(f"слово{i}" for i in range(150_000))
    started = time.perf_counter()
    found = assess.__wrapped__(f"АРМ зависает\nАРМ зависает. {words}", CONFIG)
    assert time.perf_counter() - started < 2.0
    assert found.level == 3
