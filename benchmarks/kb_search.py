"""Known-error database benchmark: how fast is a search among 100,000 incidents, and is it right?

Usage (from the repository root)::

    .venv/bin/python benchmarks/kb_search.py [--incidents 100000] [--queries 500] [--seed 1]
                                             [--keep-db]

Uses a fresh database on $MAILBOT_TEST_DATABASE_URL's server (else an embedded pgserver),
generates incidents deterministically (components, symptoms, circumstances, error codes and
versions of a SCADA product, in Russian), imports them the way ``mailbot kb import`` does, and
runs searches of five kinds, each timed alone, as the CLI and the intake of one ОП3 mail run
them (``mailbot.kb.search.search``: two statements):

- ``short``: a few words of a known problem in other word forms («модуль опроса зависла»);
- ``typo``: the same with a typing error in a word;
- ``code``: an error code with a word or two («ошибка 0x8007052E при старте»);
- ``mail``: a customer's mail of 60–120 words describing a known problem among greetings,
  urgency and a signature (what ОП3 intake searches for);
- ``unrelated``: short and long texts about other things (invoices, contracts, holidays).

It prints the latency (p50, p95, p99, max) per kind and overall, and how right the answers
are: a related search finds an incident of its problem first (``short``, ``typo``, ``code``) or
among the first three (``mail``); an unrelated one finds nothing. The issue's target is a p95
below 50 ms.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from mailbot.kb import incidents, search  # noqa: E402
from mailbot.register import db  # noqa: E402
from tests.servers import drop_database, embedded_postgres_url, fresh_database  # noqa: E402

TARGET_P95_MS = 50.0

# What fails (a module of a subsystem), how, and when: over six million distinct problems, so
# that 100,000 incidents are as varied as a real database's (few repeat a title).
MODULES = [  # (as a title names it, as a customer may name it)
    ("Сервер", "сервер"), ("Служба", "служба"), ("Модуль", "модуль"), ("Драйвер", "драйвер"),
    ("Шлюз", "шлюз"), ("Клиент", "клиент"), ("Агент", "агент"), ("Редактор", "редактор"),
    ("Генератор", "генератор"), ("Конфигуратор", "конфигуратор"), ("Планировщик", "планировщик"),
    ("Менеджер", "менеджер"), ("Панель", "панель"), ("Журнал", "журнал"), ("Архив", "архив"),
    ("Интерфейс", "интерфейс"), ("Терминал", "терминал"), ("Концентратор", "концентратор"),
    ("Контроллер", "контроллер"), ("Модем", "модем"), ("Регистратор", "регистратор"),
    ("Адаптер", "адаптер"), ("Коммутатор", "коммутатор"), ("Калькулятор", "калькулятор"),
    ("Монитор", "монитор"), ("Виджет", "виджет"), ("Сервис", "сервис"), ("Мастер", "мастер"),
    ("Обработчик", "обработчик"), ("Анализатор", "анализатор"),
]
SUBSYSTEMS = [
    "опроса", "тревог", "отчётов", "архивирования", "лицензий", "телеметрии",
    "синхронизации времени", "резервного копирования", "учёта тепла", "учёта электроэнергии",
    "мнемосхем", "трендов", "событий", "уведомлений", "экспорта данных", "импорта конфигурации",
    "диагностики каналов", "видеонаблюдения", "доступа", "обмена с 1С", "балансов", "пользователей",
    "расписаний", "сценариев", "протоколов МЭК", "каналов связи", "паролей", "сертификатов",
    "обновлений", "шаблонов", "водоснабжения", "газоснабжения", "вентиляции", "освещения",
    "лифтового оборудования", "пожарной сигнализации", "учёта воды", "котельных", "насосных станций",
    "тепловых пунктов", "подстанций", "счётчиков", "датчиков давления", "датчиков температуры",
    "журналов оператора", "смен", "квитирования", "печати", "веб-доступа", "мобильного доступа",
    "карт объектов", "GIS-слоёв", "SMS-оповещения", "почтовых рассылок", "OPC UA", "Modbus TCP",
    "BACnet", "SNMP-мониторинга", "прогнозирования", "нормативов",
]
SYMPTOMS = [  # (as a title says it, forms a customer uses)
    ("не запускается", "не запускался", "перестал запускаться"),
    ("зависает", "зависла", "зависание"),
    ("аварийно завершает работу", "аварийно завершилась работа", "аварийное завершение работы"),
    ("не подключается к базе данных", "не подключился к базе данных", "нет подключения к базе данных"),
    ("теряет связь с контроллерами", "потеряла связь с контроллерами", "потеря связи с контроллерами"),
    ("не сохраняет настройки", "не сохранились настройки", "настройки не сохраняются"),
    ("медленно открывает мнемосхемы", "медленно открываются мнемосхемы", "медленное открытие мнемосхем"),
    ("показывает неверные значения", "показывал неверные значения", "неверные значения показаний"),
    ("не отображает тревоги", "не отображаются тревоги", "тревоги не отображаются"),
    ("не формирует суточный отчёт", "не формируются суточные отчёты", "суточный отчёт не формируется"),
    ("дублирует записи в архиве", "дублируются записи в архиве", "дублирование записей в архиве"),
    ("не видит лицензионный ключ", "не видел лицензионный ключ", "ключ лицензии не виден"),
    ("потребляет всю память", "потребляла всю память", "потребление всей памяти"),
    ("не принимает пароль администратора", "не принял пароль администратора", "пароль администратора не принимается"),
    ("сбрасывает системное время", "сбросила системное время", "сброс системного времени"),
    ("не обновляет данные", "не обновлялись данные", "данные не обновляются"),
    ("выдаёт ошибку доступа", "выдала ошибку доступа", "ошибка доступа"),
    ("не печатает бланки", "не печатала бланки", "бланки не печатаются"),
    ("искажает кириллицу", "искажала кириллицу", "искажение кириллицы"),
    ("не экспортирует архив", "не экспортировался архив", "архив не экспортируется"),
    ("останавливает опрос", "остановила опрос", "остановка опроса"),
    ("не находит устройства", "не нашла устройства", "устройства не находятся"),
    ("зацикливается при загрузке", "зациклилась при загрузке", "зацикливание при загрузке"),
    ("не отправляет уведомления", "не отправлялись уведомления", "уведомления не отправляются"),
    ("блокирует учётную запись", "заблокировала учётную запись", "блокировка учётной записи"),
    ("не импортирует конфигурацию", "не импортировалась конфигурация", "конфигурация не импортируется"),
    ("показывает пустые тренды", "показывались пустые тренды", "пустые тренды"),
    ("пропускает показания счётчиков", "пропустила показания счётчиков", "пропуск показаний счётчиков"),
    ("не применяет обновление", "не применилось обновление", "обновление не применяется"),
    ("перегружает процессор", "перегружала процессор", "перегрузка процессора"),
    ("не открывает журнал", "не открывался журнал", "журнал не открывается"),
    ("путает единицы измерения", "перепутала единицы измерения", "путаница единиц измерения"),
    ("не квитирует сигналы", "не квитировались сигналы", "сигналы не квитируются"),
    ("теряет архивные данные", "потеряла архивные данные", "потеря архивных данных"),
    ("не строит графики", "не строились графики", "графики не строятся"),
    ("удваивает потребление", "удвоила потребление", "удвоение потребления"),
    ("не запоминает фильтры", "не запомнила фильтры", "фильтры не запоминаются"),
    ("портит файл конфигурации", "испортила файл конфигурации", "порча файла конфигурации"),
    ("не видит сетевые диски", "не видела сетевые диски", "сетевые диски не видны"),
    ("рассылает пустые письма", "разослала пустые письма", "рассылка пустых писем"),
]
CIRCUMSTANCES = (
    [f"после обновления {x}" for x in (
        "драйверов", "Windows", "антивируса", "СУБД", "прошивки контроллера", "Java", "браузера",
        "сертификатов", "платформы", "конфигурации объектов")]
    + [f"при {x}" for x in (
        "большом числе контроллеров", "работе через VPN", "потере питания", "низкой скорости канала",
        "одновременной работе нескольких пользователей", "экспорте архива за год",
        "длинных именах объектов", "опросе по GPRS", "заполненном диске", "отключении сети",
        "русской раскладке клавиатуры", "включённой отладке", "смене смены диспетчеров",
        "переходе через полночь", "резервировании каналов", "переполнении очереди событий",
        "нестабильной связи", "работе от ИБП", "обрыве линии RS-485", "запуске по расписанию")]
    + [f"после {x}" for x in (
        "перехода на зимнее время", "смены пароля СУБД", "переноса базы на новый сервер",
        "перезагрузки сервера", "замены жёсткого диска", "установки пакета исправлений",
        "изменения IP-адреса", "смены часового пояса", "добавления новых объектов",
        "восстановления из резервной копии", "миграции конфигурации", "сбоя синхронизации",
        "увеличения числа каналов", "замены контроллера", "переименования объектов")]
    + [f"на {x}" for x in (
        "Windows Server 2019", "Astra Linux", "РЕД ОС", "виртуальной машине", "терминальном сервере",
        "резервном сервере", "ноутбуке диспетчера", "планшете", "объекте без интернета",
        "стенде заказчика")]
)
SOLUTIONS = [
    "Переустановите {c} и перезапустите службу.", "Установите пакет исправлений {v}.",
    "Увеличьте таймаут опроса до 30 секунд в настройках канала.",
    "Удалите временные файлы конфигурации и перезапустите сервер.",
    "Запустите службу от имени администратора.", "Обновите драйвер до версии {v}.",
    "Проверьте права учётной записи службы на каталог архива.",
    "Пересоздайте индексы архивной базы утилитой обслуживания.",
    "Отключите проверку сертификатов и обновите корневые сертификаты.",
    "Измените кодировку экспорта на UTF-8.",
]
UNRELATED = [
    "Прошу выставить счёт на оплату услуг за третий квартал",
    "Подскажите, пожалуйста, график работы бухгалтерии в праздничные дни",
    "Направляем подписанный акт сверки взаиморасчётов",
    "Когда будет готов договор на продление сопровождения?",
    "Просим перенести встречу на следующую неделю",
    "Поздравляем с наступающим Новым годом!",
    "Уточните реквизиты для оплаты и номер договора",
    "Нужен доступ на объект для вашего инженера, сообщите ФИО и паспортные данные",
    "Приглашаем на семинар по энергосбережению",
    "Сколько стоит обучение новых сотрудников?",
]
FILLER = [
    "Добрый день!", "Здравствуйте, коллеги.", "Просим срочно помочь.",
    "Объект находится в эксплуатации, диспетчеры не могут нормально работать.",
    "Проблема появилась сегодня утром.", "Перезагрузка компьютера не помогла.",
    "Скриншот приложить не можем.", "Ранее подобного не наблюдалось.",
    "Заранее благодарим за помощь.", "Ждём ответа как можно скорее.",
    "Система установлена на основном и резервном серверах.",
]
SIGNATURES = ["С уважением,\nИванов Иван Иванович\nинженер АСУ ТП, ООО «Завод»",
              "--\nПетрова Анна\nглавный диспетчер\nтел. +7 495 000-00-00",
              "С уважением, Сидоров С. С., начальник службы эксплуатации"]
LETTERS = "абвгдежзийклмнопрстуфхцчшщыэюя"


@dataclass(frozen=True)
class Problem:
    module: int
    subsystem: int
    symptom: int
    circumstance: int
    code: str

    def component(self, form: int = 0) -> str:
        return f"{MODULES[self.module][form]} {SUBSYSTEMS[self.subsystem]}"

    def problem(self) -> str:
        return f"{self.component()} {SYMPTOMS[self.symptom][0]} {CIRCUMSTANCES[self.circumstance]}"

    def title(self) -> str:
        return (f"Ошибка {self.code}: " if self.code else "") + self.problem()


def generate(rng: random.Random, count: int) -> list[tuple[Problem, dict[str, str]]]:
    """``count`` incidents; every third has an error code of its own."""
    made = []
    for n in range(count):
        problem = Problem(rng.randrange(len(MODULES)), rng.randrange(len(SUBSYSTEMS)),
                          rng.randrange(len(SYMPTOMS)), rng.randrange(len(CIRCUMSTANCES)),
                          f"0x{rng.randrange(16 ** 8):08X}" if n % 3 == 0 else "")
        version = f"3.{rng.randrange(10)}.{rng.randrange(30)}"
        symptoms = (f"Пользователи сообщают, что {problem.component(1)} "
                    f"{SYMPTOMS[problem.symptom][1]} "
                    f"{CIRCUMSTANCES[problem.circumstance]}. "
                    + (f"В журнале ошибка {problem.code}. " if problem.code else "")
                    + f"Воспроизводится на версии {version}.")
        solution = rng.choice(SOLUTIONS).format(c=problem.component(1), v=f"3.{rng.randrange(10)}."
                                                                  f"{rng.randrange(30)}")
        made.append((problem, {"title": problem.title(), "symptoms": symptoms, "solution": solution,
                               "product": "АС ТЕКОН-Диспетчеризация", "version": version,
                               "status": rng.choice(("new", "investigating", "solved", "closed"))}))
    return made


def typo(rng: random.Random, phrase: str) -> str:
    """``phrase`` with one letter of one of its long words dropped, doubled or replaced."""
    words = phrase.split()
    long = [i for i, w in enumerate(words) if len(w) >= 7 and w.isalpha()]
    if not long:
        return phrase
    i = rng.choice(long)
    word, at = words[i], rng.randrange(2, len(words[i]) - 2)
    words[i] = rng.choice((word[:at] + word[at + 1:], word[:at] + word[at] + word[at:],
                           word[:at] + rng.choice(LETTERS) + word[at + 1:]))
    return " ".join(words)


def queries(rng: random.Random, made: list[tuple[Problem, dict]], per_kind: int
            ) -> list[tuple[str, str, Problem | None]]:
    """(kind, text, the problem it is about) for each search."""
    coded = [p for p, _ in made if p.code]
    found = []
    for _ in range(per_kind):
        p = rng.choice(made)[0]
        short = f"{p.component(rng.choice((0, 1)))} {SYMPTOMS[p.symptom][rng.choice((1, 2))]}"
        found.append(("short", short, p))
        found.append(("typo", typo(rng, short), p))
        c = rng.choice(coded)
        found.append(("code", rng.choice((f"ошибка {c.code}", f"{c.code} при старте",
                                          f"в журнале {c.code.lower()}")), c))
        sentences = rng.sample(FILLER, rng.randint(3, 6))
        sentences.insert(rng.randrange(1, len(sentences)), (
            f"У нас {p.component(1)} {SYMPTOMS[p.symptom][rng.choice((1, 2))]} "
            f"{CIRCUMSTANCES[p.circumstance]}."))
        subject = f"Сбой: {p.component(1)}"
        found.append(("mail", f"{subject}\n" + " ".join(sentences) + "\n\n" + rng.choice(SIGNATURES), p))
        other = rng.choice(UNRELATED)
        found.append(("unrelated", rng.choice((other, f"{rng.choice(FILLER)} {other}. "
                                               f"{rng.choice(FILLER[:3])}\n\n{rng.choice(SIGNATURES)}")),
                      None))
    return found


def right(kind: str, problem: Problem | None, matches: list[search.IncidentMatch]) -> bool:
    """Does the answer fit the question (see the module's docstring)?"""
    if problem is None:
        return not matches
    if kind == "code":
        return bool(matches) and problem.code in matches[0].title
    wanted = f"{problem.component()} {SYMPTOMS[problem.symptom][0]}"
    if kind == "mail":
        return any(problem.problem() in m.title for m in matches[:3])
    return bool(matches) and wanted in matches[0].title


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500, help="searches of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    url = fresh_database(os.environ.get("MAILBOT_TEST_DATABASE_URL") or embedded_postgres_url())
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    try:
        db.init_schema(engine)
        rng = random.Random(args.seed)
        made = generate(rng, args.incidents)
        rows = [incidents._Row(n, values) for n, (_, values) in enumerate(made, 1)]
        started = time.perf_counter()
        with sessions.begin() as session:
            summary = incidents.import_rows(session, rows, actor="benchmark",
                                            now=datetime.now(timezone.utc))
        took = time.perf_counter() - started
        print(f"import: {summary.describe()} in {took:.1f} s ({len(rows) / took:,.0f} incidents/s)")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE incidents"))
            conn.execute(text("VACUUM ANALYZE incident_terms"))
            conn.execute(text("VACUUM ANALYZE incident_title_words"))
            terms = conn.execute(text("SELECT count(*) FROM incident_terms")).scalar_one()
            size = conn.execute(text(
                "SELECT pg_size_pretty(pg_total_relation_size('incidents'))")).scalar_one()
        print(f"{args.incidents:,} incidents ({size} with indexes), {terms:,} distinct words")

        asked = queries(rng, made, args.queries)
        timings: dict[str, list[float]] = {}
        correct: dict[str, int] = {}
        with sessions() as session:
            for _, query, _ in asked[:50]:  # warm the caches, as a running daemon has them
                search.search(db.dbapi(session), [query])
            for kind, query, problem in asked:
                started = time.perf_counter()
                found = search.search(db.dbapi(session), [query], limit=3)[query]
                timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
                correct[kind] = correct.get(kind, 0) + right(kind, problem, found)
                session.rollback()
        print(f"\n{'kind':<10} {'searches':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8}  right")
        everything = [t for values in timings.values() for t in values]
        for kind, values in [*timings.items(), ("all", everything)]:
            share = (f"{correct[kind] / len(values):6.1%}" if kind in correct
                     else f"{sum(correct.values()) / len(values):6.1%}")
            print(f"{kind:<10} {len(values):>8} {percentile(values, .5):>8.1f} "
                  f"{percentile(values, .95):>8.1f} {percentile(values, .99):>8.1f} "
                  f"{max(values):>8.1f}  {share}")
        p95 = percentile(everything, .95)
        print(f"\nsearch p95 {p95:.1f} ms: {'below' if p95 < TARGET_P95_MS else 'NOT below'} "
              f"the target of {TARGET_P95_MS:.0f} ms (mean {statistics.mean(everything):.1f} ms)")
        return 0 if p95 < TARGET_P95_MS else 1
    finally:
        engine.dispose()
        if args.keep_db:
            print(f"database kept: {url}")
        else:
            drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
